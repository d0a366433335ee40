"""Cross toolchains and ELF checks for libraries built for another machine.

The Debian cross compilers link TVM's object code into a shared library for the target; the ELF
header (e_machine) proves which architecture a library was built for. A library for another
architecture cannot run here; docs/tvm.md says what is and is not verified for those.
"""
from __future__ import annotations

import os
import shutil
from typing import Any

from ...errors import EngineNotInstalledError, FormatError
from ...runtime.tvm_host import EM_AARCH64, EM_ARM, EM_X86_64, MACHINES, read_elf_header  # noqa: F401  (cross.X too)

ARCH_TO_MACHINE = {v: k for k, v in MACHINES.items()}

# apt packages that provide each cross compiler (Debian bookworm)
APT_PACKAGES = {
    "aarch64-linux-gnu-g++": ("gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu"),
    "arm-linux-gnueabihf-g++": ("gcc-arm-linux-gnueabihf", "g++-arm-linux-gnueabihf"),
}


def compiler_for(target: Any) -> str | None:
    """The cross compiler a target needs (None for the host), checked to be installed."""
    cc = getattr(target, "cross_compiler", None)
    if cc is None or getattr(target, "device", "cpu") != "cpu":
        return None
    if shutil.which(cc) is None:
        pkgs = " ".join(APT_PACKAGES.get(cc, (cc,)))
        raise EngineNotInstalledError(f"target '{target.name}' needs the cross compiler {cc}, which is not "
                                      f"installed; on Debian/Ubuntu: apt-get install -y {pkgs} "
                                      "(make setup-cross)")
    return cc


def check_library_arch(path: str | os.PathLike, arch: str) -> dict[str, Any]:
    """The library's ELF header, after checking that it is a shared library for `arch`."""
    header = read_elf_header(path)
    want = ARCH_TO_MACHINE.get(arch)
    if want is not None and header["machine"] != want:
        raise FormatError(f"{path}: built for {header['arch']} (e_machine {header['machine']}), "
                          f"expected {arch} (e_machine {want})")
    if header["type"] != "shared":
        raise FormatError(f"{path}: ELF type {header['type']}, expected a shared library")
    return header

"""TVM engine: a `.tvm.so` library compiled by modelkit, run with the Relax VirtualMachine.

The manifest beside the library gives the signature (ONNX names, batch fixed or dynamic) and the
target; inputs are validated against it (Model.predict binds them) before the VM sees them, passed
to the VM in signature order, and outputs come back as numpy arrays under the signature's names.
A library built for another machine (aarch64, armv7, CUDA) loads for inspection, but predict
raises LoadError here: its code cannot run on this CPU.

A library is native code (dlopen runs its constructors), so load() refuses one this machine did not
compile (modelkit.trust: the local trust store) with UnsafeModelError unless trust_unsafe_code=True.
The check is repeated on the bytes dlopen will read, right before the first predict loads them.

TVM's gather ("take") does not check its indices: a token id past an Embedding's input_dim reads out of
bounds (garbage, or a crash). Model.predict checks ids against the range the manifest records before the VM
runs, as for every engine (modelkit.runtime.id_ranges).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import manifest as _manifest
from .._require import require
from ..errors import LoadError, UnsafeModelError
from ..formats import Format
from .base import Model, parse_device
from .memory import guard_load


class TvmModel(Model):
    format = Format.TVM
    engine = "tvm"

    def __init__(self, path: Path, manifest: _manifest.Manifest, device: str, why_not: str | None,
                 trust_unsafe_code: bool = False):
        super().__init__(path, manifest.sig)
        self.manifest = manifest
        self._trust = trust_unsafe_code
        self.device = device
        self._why_not = why_not  # set when this machine cannot run the library
        self._vm: Any = None
        self._dev: Any = None
        self._on_cpu = False

    @property
    def runnable(self) -> bool:
        return self._why_not is None

    def _load_vm(self) -> None:
        if self._why_not is not None:
            raise LoadError(f"{self.path.name}: {self._why_not}")
        import tvm
        from tvm.runtime.vm import VirtualMachine  # the runtime's VM: works with TVM_USE_RUNTIME_LIB=1 too

        kind, index = parse_device(self.device, ("cpu", "cuda"))
        if kind == "cuda":
            from .tvm_cuda import prepare

            prepare(index, self.path)  # TVM's CUDA runtime, and a compiler for kernels carried as source
        dev = tvm.cpu(index) if kind == "cpu" else tvm.cuda(index)
        if not dev.exist:
            why = f"TVM sees no {kind.upper()} device {index}"
            if kind == "cuda":
                from .tvm_host import tvm_cuda_missing

                why = tvm_cuda_missing() or why
            raise LoadError(f"{self.path.name}: device '{self.device}' is not available here ({why}); the ONNX "
                            "model also runs on a GPU with onnxruntime-gpu: modelkit.load('model.onnx', device='cuda')")
        check_library(self.path, self.manifest, self._trust)  # the file may have changed since load()
        try:
            lib = tvm.runtime.load_module(str(self.path))
            self._vm = VirtualMachine(lib, dev)
        except Exception as exc:  # TVM's loader raises its own error types from C++: re-raise typed
            raise LoadError(f"{self.path}: TVM could not load this library: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        self._dev, self._on_cpu = dev, kind == "cpu"

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._vm is None:
            self._load_vm()
        import tvm

        dev, cpu = self._dev, self._on_cpu
        args = [_as_tensor(tvm, inputs[name], dev, cpu) for name in self.signature.input_names]
        try:
            out = self._vm["main"](*args)
        except (RuntimeError, ValueError, TypeError) as exc:  # TVM's errors derive from these; inputs were
            # validated, so the library and its manifest disagree (a shape check inside the VM failed)
            raise LoadError(f"{self.path.name}: the TVM library failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        values = [out] if not _is_sequence(out) else list(out)
        names = self.signature.output_names
        if len(values) != len(names):
            raise LoadError(f"{self.path.name}: the library returned {len(values)} outputs, its manifest "
                            f"names {len(names)} ({names})")
        return {n: _to_numpy(v, cpu) for n, v in zip(names, values)}


def _to_numpy(tensor: Any, cpu: bool) -> np.ndarray:
    """A CPU output through DLPack and one numpy copy (~0.4 us; TVM's .numpy() costs ~4 us, more than a
    fifth of the digits CNN's whole call). Copied: the VM may return a tensor it keeps (a constant output)
    or the caller's own input, which the caller must not be able to change through the result."""
    if cpu:
        try:
            return np.from_dlpack(tensor).copy()
        except (TypeError, BufferError, RuntimeError):  # a dtype numpy's DLPack import does not know
            pass
    return tensor.numpy()


def _as_tensor(tvm: Any, arr: np.ndarray, dev: Any, cpu: bool) -> Any:
    """The array as a TVM tensor on `dev`. On the CPU through DLPack (~0.4 us): the caller's own memory when it
    is 64-byte aligned, as TVM's kernels require (bind made it C-contiguous; the VM never writes its inputs),
    else an aligned numpy copy (~1 us for a small input). tvm.runtime.tensor costs ~25 us a call, more than
    the digits CNN's whole compiled call."""
    if not cpu:
        return tvm.runtime.tensor(arr, dev)
    if not (arr.flags.writeable and arr.ctypes.data % 64 == 0):  # DLPack exports no read-only arrays either
        buf = np.empty(arr.nbytes + 64, np.uint8)
        start = -buf.ctypes.data % 64
        aligned = buf[start:start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
        aligned[...] = arr
        arr = aligned
    return tvm.runtime.from_dlpack(arr)


def _is_sequence(value: Any) -> bool:
    return not hasattr(value, "numpy") and hasattr(value, "__len__")


@guard_load("tvm")
def load(path: Path, device: str | None = None, threads: int | None = None, trust_unsafe_code: bool = False,
         **options: Any) -> TvmModel:
    require("tvm", "run-tvm", "apache-tvm")
    m = _manifest.read(path)
    if m is None or m.format != Format.TVM.value:
        raise LoadError(f"{path}: a TVM library needs the manifest modelkit wrote beside it "
                        f"({path.name}.modelkit.json)")
    check_library(Path(path), m, trust_unsafe_code)
    extra = m.extra or {}
    lib_device = str(extra.get("device") or "cpu")
    device = device or "cpu"
    kind, _ = parse_device(device, ("cpu", "cuda"))
    why_not = _why_not_runnable(Path(path), extra)
    if why_not is None and kind != lib_device:  # loads for inspection; predict says why it cannot run
        why_not = f"compiled for {lib_device} (target {m.target}); load it with device='{lib_device}', not '{device}'"
    from .tvm_host import use_threads

    use_threads(threads)  # TVM's own default is half the CPUs on x86-64 (tvm_host.default_threads)
    return TvmModel(Path(path), m, device, why_not, trust_unsafe_code)


def check_library(path: Path, m: _manifest.Manifest, trust_unsafe_code: bool = False) -> str:
    """The library must be the file its manifest describes, and one this machine compiled (or trusted by
    the caller). Returns its sha256."""
    digest = check_library_digest(path, m)
    if not trust_unsafe_code:
        from .. import trust

        if not trust.is_trusted(digest):
            raise UnsafeModelError(
                f"{path}: refused to load: a TVM library is native code that runs as soon as it is loaded "
                f"(dlopen runs its constructors), and this machine did not compile it (sha256 {digest[:12]}… is "
                f"not in the trust store {trust.describe()}; the sha256 in its manifest only shows that the two "
                "files travel together). Compile it here with `modelkit compile`, or, if you trust where it "
                "came from, pass --trust-unsafe-code (trust_unsafe_code=True)")
    return digest


def check_library_digest(path: Path, m: _manifest.Manifest) -> str:
    """A library is native code that dlopen runs: load it only if it is the file modelkit wrote (the
    manifest's sha256). A truncated or modified library can crash the process in dlopen (SIGBUS/SIGSEGV)."""
    if not m.sha256:
        raise LoadError(f"{path}: its manifest records no sha256; modelkit only loads libraries it compiled")
    digest = _manifest.sha256_of(path)
    if digest != m.sha256:
        raise LoadError(f"{path}: the library does not match its manifest (sha256 {digest[:12]}…, manifest says "
                        f"{m.sha256[:12]}…): corrupt or modified; refusing to load it")
    return digest


def _why_not_runnable(path: Path, extra: dict[str, Any]) -> str | None:
    from .tvm_host import host_arch, read_elf_header

    header = read_elf_header(path)
    here = host_arch()
    if header["arch"] != here:
        return (f"built for {header['arch']} (ELF e_machine {header['machine']}); this machine is {here}. "
                "Copy it with its manifest to the target and run it there with the TVM runtime")
    return None

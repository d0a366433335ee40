"""torch.export engine for .pt2 files: torch.export.load(...).module(), no Keras needed.

The Signature comes from the `modelkit_signature.json` extra file inside the archive, else from the
manifest beside it (see modelkit.runtime.torchscript, whose helpers this engine shares).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ..errors import LoadError
from ..formats import Format
from .memory import guard_load
from .torchscript import SIGNATURE_FILE, TorchModel, import_torch, resolve_signature, torch_device


class TorchExportModel(TorchModel):
    format = Format.TORCH_EXPORT
    engine = "torch.export"


@guard_load("torch.export")
def load(path: Path, device: str = "cpu", threads: int | None = None, **options: Any) -> TorchExportModel:
    from ..safety.pickles import check_torch_archive

    # every pickle (never lifted) and, unless trusted, the code: before torch opens the file
    check_torch_archive(path, trust_unsafe_code=bool(options.get("trust_unsafe_code")))
    torch = import_torch()
    dev = torch_device(device, threads)
    extra = {SIGNATURE_FILE: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile, AssertionError, TypeError,
            AttributeError, IndexError, NotImplementedError, EOFError) as exc:  # a corrupt archive, typed
        text = str(exc).strip()
        raise LoadError(f"{path}: torch.export could not load this program: "
                        f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    if dev != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, dev)
    return TorchExportModel(path, program.module(), resolve_signature(path, extra[SIGNATURE_FILE]), dev)

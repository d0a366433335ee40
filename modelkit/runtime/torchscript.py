"""TorchScript engine: torch.jit.load, no Keras needed.

Torch artifacts carry no tensor names, so the Signature comes from the `modelkit_signature.json`
extra file modelkit stores inside the artifact, else from the manifest beside it. The helpers here
(signature, device, TorchModel) are shared with the .pt2 engine (modelkit.runtime.torch_export).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import manifest as _manifest
from .._require import require
from ..errors import LoadError, ShapeError
from ..formats import Format
from ..spec import Signature
from .base import Model, parse_device
from .memory import guard_load

SIGNATURE_FILE = "modelkit_signature.json"  # same name as modelkit.converters._torch_module.SIGNATURE_FILE


class TorchModel(Model):
    """A torch callable taking positional tensors (Signature input order), returning a tuple of outputs."""

    def __init__(self, path: Path, module: Any, signature: Signature, device: str):
        super().__init__(path, signature)
        self.module = module
        self.device = device

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        on_cpu = self.device == "cpu"  # from_numpy shares memory; .to/.cpu are no-op calls on CPU: skip them
        args = [torch.from_numpy(_writable(inputs[n])) for n in self.signature.input_names]
        if not on_cpu:
            args = [a.to(self.device) for a in args]
        try:
            with torch.inference_mode():
                outs = self.module(*args)
        except (RuntimeError, AssertionError, IndexError) as exc:  # inputs were validated: a failure here is the
            # model's (truncated weights; an id past an Embedding's table where no manifest records the range), or a
            # torch.export shape guard the Signature cannot express (a maximum batch)
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            if "Guard failed" in text:
                shapes = ", ".join(f"'{n}' {tuple(inputs[n].shape)}" for n in self.signature.input_names)
                raise ShapeError(f"{self.path.name} was exported for other input shapes than {shapes}: "
                                 f"{first}") from exc
            raise LoadError(f"{self.path}: torch failed running this model: {first}") from exc
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        names = self.signature.output_names
        if len(outs) != len(names):
            raise LoadError(f"{self.path.name} returned {len(outs)} outputs, its signature names {len(names)}: "
                            f"{names}")
        return {n: (o.detach() if on_cpu else o.detach().cpu()).numpy() for n, o in zip(names, outs)}


class TorchScriptModel(TorchModel):
    format = Format.TORCHSCRIPT
    engine = "torch.jit"


def _writable(arr: np.ndarray) -> np.ndarray:
    # torch.from_numpy shares memory and warns on read-only arrays; copy only those
    return arr if arr.flags.writeable else arr.copy()


def import_torch() -> Any:
    return require("torch", "run-torch")


def torch_device(device: str, threads: int | None) -> str:
    """'cpu' or 'cuda:N' for torch; CUDA must be available, never a silent fallback. Sets threads."""
    torch = import_torch()
    kind, index = parse_device(device, ("cpu", "cuda"))
    if kind == "cuda" and not torch.cuda.is_available():
        raise LoadError(f"device '{device}' needs a CUDA build of torch and a GPU; this torch "
                        f"({torch.__version__}) sees none")
    if threads:
        torch.set_num_threads(int(threads))
    if kind == "cuda":
        # exact by default, as OpenVINO's precision is pinned to f32: cuDNN's convolutions run TF32 unless told
        # not to (MobileNetV2 on an H200: 3.1e-3 max abs error on its probabilities). Process-wide in torch.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return "cpu" if kind == "cpu" else f"cuda:{index}"


def make_portable(module: Any) -> tuple[int, int]:
    """Make a traced module run on its inputs' device, exactly; returns (pinned devices, TF32 convolutions) replaced.

    A trace records what it saw as constants. Keras-on-torch's convert_to_tensor adds `.to(device='cpu')` for
    each input, weight and intermediate (499 in MobileNetV2), and factory ops (an LSTM's zero state) get
    device='cpu': torch.jit.load's map_location moves the weights, not these, so loaded for 'cuda' such a module
    ran every op on the CPU, copying the weights back on each call (MobileNetV2 224 at batch 32 on an H200:
    107-171 ms, against 8-13 ms once fixed). Each convolution also records cuDNN's `allow_tf32=True` (3.1e-3 max
    abs error on MobileNetV2's probabilities on that GPU). In forward (submodule calls inlined), every Device
    constant becomes the first tensor input's device, and every convolution's allow_tf32 becomes False.
    """
    import torch

    graph = module.graph
    torch._C._jit_pass_inline(graph)
    tensors = [v for v in list(graph.inputs())[1:] if isinstance(v.type(), torch._C.TensorType)]
    pinned = [n for n in graph.findAllNodes("prim::Constant")
              if isinstance(n.output().type(), torch._C.DeviceObjType)]
    if tensors and pinned:
        where = graph.create("prim::device", [tensors[0]])
        where.output().setType(torch._C.DeviceObjType.get())
        where.insertBefore(next(iter(graph.nodes())))
        for node in pinned:
            node.output().replaceAllUsesWith(where.output())
            node.destroy()
    convolutions = [n for n in graph.findAllNodes("aten::_convolution") if len(list(n.inputs())) == 13
                    and n.inputsAt(12).toIValue() is True]
    if convolutions:
        exact = graph.insertConstant(False)
        exact.node().moveBefore(next(iter(graph.nodes())))
        for node in convolutions:
            node.replaceInput(12, exact)
    return (len(pinned) if tensors else 0), len(convolutions)


def resolve_signature(path: Path, embedded: str | bytes | None, name: str = SIGNATURE_FILE) -> Signature:
    """The Signature stored inside the artifact as `name` (JSON text or UTF-8 bytes), else the manifest's; neither
    is a LoadError. TorchScript, .pt2 and ExecuTorch programs all carry it this way."""
    if embedded:
        try:
            return Signature.from_dict(json.loads(embedded))
        except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise LoadError(f"{path}: corrupt {name} inside the artifact ({exc})") from exc
    m = _manifest.read(path)
    if m is None:
        raise LoadError(f"{path}: no {name} inside and no manifest beside it; torch artifacts "
                        "carry no tensor names, so modelkit cannot bind inputs by name")
    return m.sig


@guard_load("torch.jit")
def load(path: Path, device: str = "cpu", threads: int | None = None, **options: Any) -> TorchScriptModel:
    from ..safety.pickles import check_torch_archive

    # every pickle (never lifted) and, unless trusted, the code: before torch opens the file
    check_torch_archive(path, trust_unsafe_code=bool(options.get("trust_unsafe_code")))
    torch = import_torch()
    dev = torch_device(device, threads)
    extra = {SIGNATURE_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
    except (RuntimeError, ValueError, OSError, AssertionError, TypeError, IndexError, EOFError) as exc:
        text = str(exc).strip()
        raise LoadError(f"{path}: torch.jit could not load this model: "
                        f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    module.eval()
    if dev != "cpu":  # a file an older modelkit (or another tool) traced pins 'cpu' and TF32 in its graph
        make_portable(module)
    return TorchScriptModel(path, module, resolve_signature(path, extra[SIGNATURE_FILE]), dev)

"""Which Keras layer fixed an open input dimension while torch.export traced a model.

`watch` registers a forward hook on every Keras layer of the module: after each call it looks at the size symbols
of the inputs' open dimensions (recorded by a pre-hook on the module) and notes the first layer after which one had
become a constant (a recurrent layer's Python loop over time, a kernel that reads a size as a Python int). The
torch edges name that layer in their refusals (modelkit.converters._torch_dims).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ..spec import Signature


@contextlib.contextmanager
def watch(module: Any, sig: Signature) -> Iterator[dict[tuple[str, int], str]]:
    """While torch.export traces `module`: {(input, axis): "'name' (Class)"} of the first Keras layer after
    whose call the symbol of that open dimension (the batch too) had become a constant."""
    seen: dict[tuple[str, int], str] = {}
    symbols: dict[tuple[str, int], Any] = {}

    def before(_mod: Any, args: tuple[Any, ...]) -> None:
        symbols.clear()
        for spec, arg in zip(sig.inputs, args):
            for axis, d in enumerate(spec.shape):
                size = arg.shape[axis] if d is None else None
                node = getattr(size, "node", None)
                if node is not None and getattr(node, "shape_env", None) is not None:
                    symbols[(spec.name, axis)] = node

    def after(layer: Any, _args: Any, _out: Any) -> None:
        for key, node in symbols.items():
            if key not in seen and _is_constant(node):
                seen[key] = f"'{getattr(layer, 'name', '?')}' ({type(layer).__name__})"

    handles = [module.register_forward_pre_hook(before)]
    keras_model = getattr(module, "model", None)
    layers = keras_model._flatten_layers(include_self=False, recursive=True) if keras_model is not None else []
    handles += [layer.register_forward_hook(after) for layer in layers if hasattr(layer, "register_forward_hook")]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def resolved(node: Any) -> Any:
    """A SymInt node's expression after the shape environment's replacements (a number once fixed)."""
    env = getattr(node, "shape_env", None)
    return env.replace(node.expr) if env is not None else node.expr


def _is_constant(node: Any) -> bool:
    return bool(getattr(resolved(node), "is_number", False))

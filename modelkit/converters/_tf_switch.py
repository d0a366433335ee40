"""`keras.ops.switch` at a constant index, as the branch it picks (nc161).

Keras' TensorFlow backend builds tf.switch_case even for a Python int index (a layer's configured mode), whose
_SwitchN tf2onnx maps to no ONNX op ("No Op registered for _SwitchN"). The branch Keras clips the index to is
called directly; a tensor index stays Keras' own.
"""
from __future__ import annotations

from typing import Any


def constant_switch(keras_own: Any) -> Any:
    """`keras_own` (keras.src.backend.tensorflow.core.switch), at a Python int index the branch it picks."""
    def switch(index: Any, branches: Any, *operands: Any) -> Any:
        if isinstance(index, int) and not isinstance(index, bool) and branches:
            return branches[min(max(index, 0), len(branches) - 1)](*operands)
        return keras_own(index, branches, *operands)
    return switch

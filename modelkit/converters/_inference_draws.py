"""Keras image augmentation layers that draw their random transformation at inference too, kept from drawing.

RandomGrayscale, RandomHue, RandomSaturation, RandomSharpness, RandomColorDegeneration and RandomPosterization
(Keras 3.15) draw one random value per image in every call, `training` or not, and use it only when training: at
inference they return their input. Under torch.export the draw over a symbolic batch fails
(GuardOnDataDependentSymNode, nc98: a photo classifier with its augmentation inside the model), so pt2, ExecuTorch
and the torch route to ONNX refused such a model. While an export runs, these classes' draw returns nothing when
not training; the layers' output is the same (their input). Classes that check `training` themselves (RandomFlip,
RandomRotation, ...) are left alone, and so is a class a Keras version lacks.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

# classes whose transform_images returns the images unchanged when not training, whatever the transformation
UNUSED_AT_INFERENCE = ("RandomGrayscale", "RandomHue", "RandomSaturation", "RandomSharpness",
                       "RandomColorDegeneration", "RandomPosterization")


def _skipped(draw: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(draw)
    def get_random_transformation(self: Any, data: Any, training: bool = True, seed: Any = None) -> Any:
        if not training:
            return None
        return draw(self, data, training=training, seed=seed)

    return get_random_transformation


@contextlib.contextmanager
def no_inference_draws() -> Iterator[None]:
    """The classes of UNUSED_AT_INFERENCE draw nothing when not training, for the duration of an export."""
    from unittest import mock

    import keras

    with contextlib.ExitStack() as stack:
        for name in UNUSED_AT_INFERENCE:
            cls = getattr(keras.layers, name, None)
            if cls is not None and "get_random_transformation" in vars(cls):
                stack.enter_context(mock.patch.object(cls, "get_random_transformation",
                                                      _skipped(vars(cls)["get_random_transformation"])))
        yield

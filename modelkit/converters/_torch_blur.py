"""Keras' torch `gaussian_blur` with its kernel sized by Python ints, for torch.export.

Keras (3.15) turns `kernel_size` into a tensor and sizes the kernel from its elements (`torch.arange(size)`,
`kernel.view(1, 1, k0, k1)`, `padding=int(k0 // 2)`), sizes torch.export cannot know ahead: the export failed with
GuardOnDataDependentSymNode (nc157: a colour-feature layer blurring a grey channel with
`keras.ops.image.gaussian_blur`), so pt2, ExecuTorch and the torch route to ONNX refused the model. The same kernel
and convolution are computed here from the sizes as given, in Keras' own steps (its (k1, k0) outer product viewed as
(k0, k1), its padding of k0 // 2 on both axes, its channels axis from `data_format` as passed), so the numbers are
Keras'. Sizes that are not two Python ints go to Keras' own code.
"""
from __future__ import annotations

from typing import Any


def static_gaussian_blur(keras_own: Any) -> Any:
    """`keras_own` (keras.src.backend.torch.image.gaussian_blur) for kernel sizes given as two ints."""
    def gaussian_blur(images: Any, kernel_size: Any = (3, 3), sigma: Any = (1.0, 1.0), data_format: Any = None) -> Any:
        import torch
        from keras.src.backend.torch.core import convert_to_tensor

        sizes = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else ()
        images = convert_to_tensor(images)
        if len(sizes) != 2 or not all(type(k) is int for k in sizes) or images.ndim not in (3, 4):
            return keras_own(images, kernel_size=kernel_size, sigma=sigma, data_format=data_format)
        sigma = convert_to_tensor(sigma)
        single = images.ndim == 3
        images = images.unsqueeze(0) if single else images
        if data_format == "channels_last":
            images = images.permute(0, 3, 1, 2)
        channels = images.shape[1]

        def taps(size: int, s: Any) -> Any:
            x = torch.arange(size, dtype=images.dtype, device=s.device) - (size - 1) / 2
            k = torch.exp(-0.5 * (x / s) ** 2)
            return k / torch.sum(k)

        kernel = torch.outer(taps(sizes[1], sigma[1]), taps(sizes[0], sigma[0])).view(1, 1, *sizes)
        blurred = torch.nn.functional.conv2d(images, kernel.expand(channels, 1, *sizes), stride=1,
                                             padding=sizes[0] // 2, groups=channels)
        if data_format == "channels_last":
            blurred = blurred.permute(0, 2, 3, 1)
        return blurred.squeeze(0) if single else blurred
    return gaussian_blur

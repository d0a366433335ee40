"""Keras' real FFT and STFT under TensorFlow, traced as matrix products for the exporters (see _tf_lowering).

tf2onnx has no RFFT over frames of unknown count ("No Op registered for RFFT"), and TFLite's builtin takes only
some sizes. A real DFT of n points is x @ cos and x @ -sin with the (n, n/2 + 1) tables of the frequencies, the same
sums every engine reads. `keras.ops.rfft` called by a user's layer goes through `matrix_rfft`; Keras'
MelSpectrogram and STFTSpectrogram call `keras.ops.stft`, whose TF backend calls `tf.signal.stft` (TF's own RFFT,
not Keras'), so `framed_stft` computes it as that function does (reflect padding when centred, frames of
fft_length every stride, the window padded to fft_length) with the matrix products: an audio classifier over
waveforms of any length converted to nothing before (nc118; at a fixed length tf2onnx wrote its own DFT).
"""
from __future__ import annotations

from typing import Any

MAX_DFT = 1024  # frame lengths the matrix form takes: two (n, n/2+1) float32 constants, 4 MiB each at most


def matrix_rfft(keras_rfft: Any) -> Any:
    """keras.ops.rfft as (x @ cos, x @ -sin) over the last axis, for a known length n <= MAX_DFT (fft_length pads
    or cuts the frames first, as the FFT does); other calls stay TF's RFFT."""
    def rfft(x: Any, fft_length: Any = None) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        frame = x.shape[-1] if x.shape.rank else None
        n = frame if fft_length is None else fft_length
        if not isinstance(frame, int) or not _takes(n, x):
            return keras_rfft(x, fft_length)
        if n < frame:
            x = x[..., :n]
        elif n > frame:
            x = tf.pad(x, [[0, 0]] * (x.shape.rank - 1) + [[0, n - frame]])
        return _dft(x, n)
    return rfft


def framed_stft(keras_stft: Any) -> Any:
    """keras.ops.stft computed as Keras' TF backend does, its RFFT as `_dft`'s products, for fft_length <= MAX_DFT
    and a "hann" / "hamming" / no window (an array window, or anything Keras would refuse, stays Keras' own)."""
    def stft(x: Any, sequence_length: int, sequence_stride: int, fft_length: int, window: Any = "hann",
             center: bool = True) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        if (not _takes(fft_length, x) or not x.shape.rank or fft_length < sequence_length
                or window not in (None, "hann", "hamming")):
            return keras_stft(x, sequence_length, sequence_stride, fft_length, window, center)
        if center:
            x = tf.pad(x, [[0, 0]] * (x.shape.rank - 1) + [[fft_length // 2, fft_length // 2]], mode="reflect")
        frames = tf.signal.frame(x, fft_length, sequence_stride)
        if window is not None:
            make = tf.signal.hann_window if window == "hann" else tf.signal.hamming_window
            before = (fft_length - sequence_length) // 2
            padding = [[before, fft_length - sequence_length - before]]
            frames = frames * tf.pad(make(sequence_length, periodic=True, dtype=x.dtype), padding)
        return _dft(frames, fft_length)
    return stft


def _takes(n: Any, x: Any) -> bool:
    """Whether the matrix form takes a DFT of n points of x."""
    return isinstance(n, int) and 0 < n <= MAX_DFT and x.dtype.is_floating


def _dft(x: Any, n: int) -> tuple[Any, Any]:
    """(real, imaginary) of the real DFT of x's last axis (n long): x @ cos, x @ -sin."""
    import numpy as np
    import tensorflow as tf

    angle = 2 * np.pi * np.outer(np.arange(n), np.arange(n // 2 + 1)) / n
    return tf.matmul(x, tf.constant(np.cos(angle), x.dtype)), tf.matmul(x, tf.constant(-np.sin(angle), x.dtype))

"""Elementwise functions traced from ops every TensorFlow-based edge has, for the TF-based trace.

TFLite has no builtin for Sinh, Cosh, Tan, Atan, Asin, Acos, Asinh, Acosh, Atanh, Erf or Erfinv (a model calling
`keras.ops.sinh` / `arcsin` / `erf` needed Flex ops, which ai-edge-litert cannot run), and tf2onnx writes Log1p,
Expm1 and Erfinv as ONNX ops that do not exist ("No Op registered for Log1p"). While a Keras model is traced,
`tf.math.<name>` (what Keras' TF backend calls, and a custom layer's `tf.math.sinh` / `tf.sinh`) is computed from
Exp, Log, Sqrt, Sin, Cos, Atan2 and selects, in the forms that keep float32 accuracy (Kahan's log1p / expm1,
sinh from expm1, the inverse functions from log1p and atan2, erf by its series and Abramowitz & Stegun's 7.1.26,
erfinv by Giles' single-precision polynomials).
Other dtypes call TensorFlow's own op; every hop is verified against its source as always.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

_LN2 = math.log(2.0)
_BIG = 1e4  # past it asinh / acosh are log(2|x|) to float32 accuracy (the next term is 1/(4 x^2))


def _floating(op: Callable[[Any], Any], own: Callable[[Any], Any]) -> Callable[..., Any]:
    def fn(x: Any, name: Any = None) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        return own(x) if x.dtype.is_floating and not x.dtype.is_complex else op(x, name=name)
    fn.__name__ = getattr(own, "__name__", "fn")
    return fn


def log1p(x: Any) -> Any:
    """log(1 + x), exact near 0: log(u) * x / (u - 1) with u = 1 + x (Kahan)."""
    import tensorflow as tf

    u = 1.0 + x
    near = tf.math.log(u) * x / (u - 1.0)
    return tf.where(tf.abs(x) > 0.5, tf.math.log(u), tf.where(tf.equal(u, 1.0), x, near))


def expm1(x: Any) -> Any:
    """exp(x) - 1, exact near 0: (u - 1) * x / log(u) with u = exp(x) (Kahan)."""
    import tensorflow as tf

    u = tf.math.exp(x)
    near = (u - 1.0) * x / tf.math.log(u)
    return tf.where(tf.abs(x) > 0.5, u - 1.0, tf.where(tf.equal(u, 1.0), x, near))


def sinh(x: Any) -> Any:
    import tensorflow as tf

    a = tf.abs(x)
    t = expm1(a)
    small = 0.5 * (t + t / (t + 1.0))
    return tf.sign(x) * tf.where(a > 20.0, _half_exp(a), small)


def cosh(x: Any) -> Any:
    import tensorflow as tf

    a = tf.abs(x)
    e = tf.math.exp(a)
    return tf.where(a > 20.0, _half_exp(a), 0.5 * (e + 1.0 / e))


def _half_exp(a: Any) -> Any:
    """exp(a) / 2 for a > 20, finite up to where cosh and sinh overflow (exp(a) alone overflows from a = 88.7)."""
    import tensorflow as tf

    root = tf.math.exp(0.5 * a)  # exp(a) / 2 as (exp(a/2) / 2) * exp(a/2): no overflow before the result's
    return tf.where(a > 88.0, (0.5 * root) * root, 0.5 * tf.math.exp(a))


def tan(x: Any) -> Any:
    import tensorflow as tf

    return tf.math.sin(x) / tf.math.cos(x)


def atan(x: Any) -> Any:
    import tensorflow as tf

    return tf.math.atan2(x, tf.ones_like(x))


def _cos_of_asin(x: Any) -> Any:
    import tensorflow as tf

    return tf.math.sqrt((1.0 - x) * (1.0 + x))


def asin(x: Any) -> Any:
    import tensorflow as tf

    return tf.math.atan2(x, _cos_of_asin(x))


def acos(x: Any) -> Any:
    import tensorflow as tf

    return tf.math.atan2(_cos_of_asin(x), x)


def asinh(x: Any) -> Any:
    import tensorflow as tf

    a = tf.abs(x)
    near = log1p(a + a * a / (1.0 + tf.math.sqrt(1.0 + a * a)))
    return tf.sign(x) * tf.where(a > _BIG, tf.math.log(a) + _LN2, near)


def acosh(x: Any) -> Any:
    import tensorflow as tf

    d = x - 1.0
    near = log1p(d + tf.math.sqrt(d * (x + 1.0)))
    return tf.where(x > _BIG, tf.math.log(x) + _LN2, near)


def atanh(x: Any) -> Any:
    import tensorflow as tf

    a = tf.abs(x)
    return tf.sign(x) * 0.5 * log1p(2.0 * a / (1.0 - a))


_TAYLOR = (1.0, -1.0 / 3.0, 1.0 / 10.0, -1.0 / 42.0, 1.0 / 216.0, -1.0 / 1320.0)  # erf's series / (2 x / sqrt(pi))
_AS_P = 0.3275911  # Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7
_AS = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592, 0.0)


def erf(x: Any) -> Any:
    """The error function: its series below |x| = 0.5 (relative error < 3e-8), Abramowitz & Stegun's 7.1.26 above."""
    import tensorflow as tf

    z = x * x
    series = (2.0 / math.sqrt(math.pi)) * x * _poly(_TAYLOR[::-1], z)
    a = tf.abs(x)
    t = 1.0 / (1.0 + _AS_P * a)
    far = tf.sign(x) * (1.0 - _poly(_AS, t) * tf.math.exp(-z))
    return tf.where(a < 0.5, series, far)


_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
            -0.00417768164, 0.246640727, 1.50140941)
_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
         0.00943887047, 1.00167406, 2.83297682)


def _poly(coefficients: tuple[float, ...], w: Any) -> Any:
    p = coefficients[0]
    for c in coefficients[1:]:
        p = c + p * w
    return p


def erfinv(x: Any) -> Any:
    """The inverse error function by M. Giles' single-precision approximation (the one XLA uses): ±inf at ±1."""
    import tensorflow as tf

    w = -tf.math.log((1.0 - x) * (1.0 + x))
    central = _poly(_CENTRAL, w - 2.5)
    tail = _poly(_TAIL, tf.math.sqrt(w) - 3.0)
    edge = tf.equal(tf.abs(x), 1.0)
    return tf.where(edge, x * float("inf"), tf.where(w < 5.0, central, tail) * x)


_OWN = {"log1p": log1p, "expm1": expm1, "sinh": sinh, "cosh": cosh, "tan": tan, "atan": atan, "asin": asin,
        "acos": acos, "asinh": asinh, "acosh": acosh, "atanh": atanh, "erf": erf, "erfinv": erfinv}


@contextlib.contextmanager
def lowered_elementwise() -> Iterator[None]:
    """Patch tf.math.<name> (and its tf.<name> alias) with the forms above while a model is traced."""
    from unittest import mock

    import tensorflow as tf

    with contextlib.ExitStack() as stack:
        for name, own in _OWN.items():
            op = getattr(tf.math, name)
            fn = _floating(op, own)
            for module in (tf.math, tf):
                if getattr(module, name, None) is op:
                    stack.enter_context(mock.patch.object(module, name, fn))
        yield

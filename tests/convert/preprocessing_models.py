"""One small model per deployable Keras preprocessing layer, as users build them: the layer (adapted on
data where it learns state) in front of a small dense head. `save` runs under any backend (tests call it
in a child process for torch- and JAX-saved files)."""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

L = keras.layers


def _head(h: Any) -> Any:
    if len(h.shape) > 2:
        h = L.Flatten()(h)
    return L.Dense(3, name="out")(L.Dense(8, activation="tanh", name="hidden")(h))


def _norm_adapted(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((6,), name="x")
    norm = L.Normalization(name="norm")
    norm.adapt(rng.normal(50.0, 20.0, (256, 6)).astype("float32"))  # raw features around 50 ± 20
    return x, _head(norm(x))


def _norm_given(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((4,), name="x")
    return x, _head(L.Normalization(mean=[5.0, -3.0, 100.0, 0.5], variance=[4.0, 1.0, 400.0, 0.01], name="norm")(x))


def _rescaling(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((8, 8, 3), name="image")
    return x, _head(L.Rescaling(1 / 255.0, name="rescale")(x))


def _resizing(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((12, 12, 3), name="image")
    return x, _head(L.Resizing(6, 6, name="resize")(x))


def _center_crop(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((12, 12, 3), name="image")
    return x, _head(L.CenterCrop(6, 6, name="crop")(x))


def _discretization(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((4,), name="x")
    disc = L.Discretization(num_bins=4, output_mode="one_hot", name="disc")
    disc.adapt(rng.normal(10.0, 3.0, (256, 4)).astype("float32"))
    return x, _head(disc(x))


def _category_encoding(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((3,), dtype="int32", name="ids")
    return x, _head(L.CategoryEncoding(num_tokens=12, output_mode="multi_hot", name="cat")(x))


def _category_one_hot(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((1,), dtype="int32", name="ids")
    return x, _head(L.CategoryEncoding(num_tokens=12, output_mode="one_hot", name="cat")(x))


def _hashing(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((4,), dtype="int64", name="ids")
    return x, _head(L.Embedding(16, 4, name="embed")(L.Hashing(16, name="hash")(x)))


def _integer_lookup(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((4,), dtype="int64", name="ids")
    lookup = L.IntegerLookup(name="lookup")
    lookup.adapt(np.array([[3, 7, 11, 20], [42, 7, 3, 99]]))
    return x, _head(L.Embedding(8, 4, name="embed")(lookup(x)))


def _integer_lookup_inverse(rng: np.random.Generator) -> tuple[Any, Any]:
    """Indices back to the vocabulary's ids (invert=True): a TF table lookup modelkit keeps as it is."""
    x = keras.Input((2,), dtype="int64", name="ids")
    back = L.IntegerLookup(vocabulary=[3, 7, 11, 20], invert=True, name="lookup")(x)
    return x, _head(keras.ops.cast(back, "float32"))


def _hashed_crossing(rng: np.random.Generator) -> tuple[Any, Any]:
    a, b = keras.Input((1,), dtype="int64", name="a"), keras.Input((1,), dtype="int64", name="b")
    return [a, b], _head(L.HashedCrossing(8, output_mode="one_hot", name="cross")((a, b)))


def _string_lookup(rng: np.random.Generator) -> tuple[Any, Any]:
    x = keras.Input((1,), dtype="string", name="text")
    return x, _head(L.StringLookup(vocabulary=["red", "green", "blue"], output_mode="one_hot", name="vocab")(x))


def _text_vectorization(rng: np.random.Generator) -> tuple[Any, Any]:
    tv = L.TextVectorization(max_tokens=30, output_sequence_length=5, name="tv")
    tv.adapt(["the cat sat", "a dog ran far", "the bird flew over the tree"])
    x = keras.Input((1,), dtype="string", name="text")
    return x, _head(L.GlobalAveragePooling1D()(L.Embedding(30, 4, name="embed")(tv(x))))


BUILDERS: dict[str, Callable[[np.random.Generator], tuple[Any, Any]]] = {
    "norm_adapted": _norm_adapted, "norm_given": _norm_given, "rescaling": _rescaling, "resizing": _resizing,
    "center_crop": _center_crop, "discretization": _discretization, "category_encoding": _category_encoding,
    "category_one_hot": _category_one_hot, "hashing": _hashing, "integer_lookup": _integer_lookup,
    "integer_lookup_inverse": _integer_lookup_inverse, "hashed_crossing": _hashed_crossing,
    "string_lookup": _string_lookup, "text_vectorization": _text_vectorization,
}


def save(kind: str, out: str, seed: int = 0) -> dict[str, Any]:
    """Build `kind` with seeded weights and save it to `out`; the backend it ran under."""
    keras.utils.set_random_seed(seed)
    x, y = BUILDERS[kind](np.random.default_rng(seed))
    keras.Model(x, y, name=kind).save(out)
    return {"backend": keras.backend.backend(), "path": out}


def try_edge(edge: str, src: str, dest: str) -> str:
    """Run one edge function directly, skipping the support check: 'ok' or the error it raised
    (proves that a refused cell really fails, so the refusal is not hiding a working conversion)."""
    from pathlib import Path

    from modelkit.converters.registry import edges
    from modelkit.converters.verify import verify_artifacts
    from modelkit.formats import Format

    target = Format.parse(edge)
    via_onnx = (Format.TVM, Format.OPENVINO)  # formats converted from the ONNX model
    steps = [(Format.KERAS, Format.ONNX), (Format.ONNX, target)] if target in via_onnx else [(Format.KERAS, target)]
    current = Path(src)
    try:
        for source, goal in steps:
            out = Path(dest) if goal == target else Path(dest).with_suffix(".onnx")
            edges()[(source, goal)].func(current, out)
            verify_artifacts(current, out)
            current = out
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "ok"

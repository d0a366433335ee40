"""The models of benchmarks/coverage.py: varied architectures as users write them, none used by the tests.

Each entry is a `Spec`: a builder `(keras, seed) -> model` that works under TensorFlow, torch and JAX,
its kind (for the per-kind percentages), and its inputs with the range the model takes (so the reference
predictions are made on the model's own inputs: 0-255 pixels, token ids with padding, standardized
features). Custom classes are registered here under package `modelkit_coverage`; the benchmark names
this module in MODELKIT_IMPORTS so every converting process can rebuild them. Weights are untrained but
seeded; BatchNormalization statistics are set from a few batches (`calibrate`), as training would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np

PACKAGE = "modelkit_coverage"


@dataclass(frozen=True)
class In:
    """One input: name (the Signature's), shape without the batch (None: dynamic, probed at `length`),
    dtype and range: floats uniform in [low, high); ints uniform in [low, high); 'padded' ids in
    [max(low, 1), high) with a random-length tail of zeros (the mask value)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    low: float = 0.0
    high: float = 1.0
    padded: bool = False


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    build: Callable[[Any, int], Any]
    inputs: tuple[In, ...]
    structure: str = "dict"  # how the built model takes its inputs: dict by name, "single" array, "list"
    length: int = 11  # the size of every dynamic dim in the probe (not one the verifier uses: 1, 13, 64)


# ------------------------------------------------------------------------------------------------
# Registered custom classes

@keras.saving.register_keras_serializable(package=PACKAGE)
class RMSNorm(keras.layers.Layer):
    """Root-mean-square normalization with a learned scale (no mean subtraction)."""

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x: Any) -> Any:
        ms = keras.ops.mean(keras.ops.square(x), axis=-1, keepdims=True)
        return x * keras.ops.rsqrt(ms + self.epsilon) * self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a (batch, length, dim) sequence of a fixed length."""

    def __init__(self, length: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape: Any) -> None:
        self.table = self.add_weight(shape=(self.length, input_shape[-1]), initializer="glorot_uniform",
                                     name="table")

    def call(self, x: Any) -> Any:
        return x + keras.ops.expand_dims(self.table, 0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "length": self.length}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualMLP(keras.Model):
    """A subclassed model: a stem, `depth` residual blocks in a Python loop, a softmax head."""

    def __init__(self, width: int = 24, depth: int = 3, classes: int = 5, **kwargs: Any):
        super().__init__(**kwargs)
        self.width, self.depth, self.classes = width, depth, classes
        self.stem = keras.layers.Dense(width, activation="gelu")
        self.blocks = [keras.layers.Dense(width, activation="swish") for _ in range(depth)]
        self.norm = keras.layers.LayerNormalization()
        self.head = keras.layers.Dense(classes, activation="softmax")

    def call(self, x: Any) -> Any:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(self.norm(h))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width, "depth": self.depth, "classes": self.classes}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SiameseConv(keras.Model):
    """A subclassed model over a dict of two images: one shared conv tower, distance and similarity heads."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(8, 3, activation="relu")
        self.conv2 = keras.layers.Conv2D(8, 3, strides=2, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.proj = keras.layers.Dense(6)
        self.sim = keras.layers.Dense(1, activation="sigmoid")

    def embed(self, x: Any) -> Any:
        return self.proj(self.pool(self.conv2(self.conv1(x))))

    def call(self, inputs: Any) -> Any:
        a, b = self.embed(inputs["anchor"]), self.embed(inputs["other"])
        distance = keras.ops.sqrt(keras.ops.sum(keras.ops.square(a - b), axis=-1, keepdims=True) + 1e-6)
        return [distance, self.sim(a * b)]


# ------------------------------------------------------------------------------------------------
# Builders (functional unless said)

def _cnn_bn(keras: Any, seed: int) -> Any:
    L = keras.layers
    x = keras.Input((28, 28, 1), name="digit")
    h = x
    for filters in (8, 16):
        h = L.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = L.Activation("relu")(L.BatchNormalization()(h))
        h = L.MaxPooling2D()(h)
    h = L.Dropout(0.3)(L.Flatten()(h))
    return keras.Model(x, L.Dense(10, activation="softmax", name="probs")(h))


def _unet(keras: Any, seed: int) -> Any:
    """An encoder-decoder: strided convs down, Conv2DTranspose / UpSampling2D up, skip concatenations."""
    L = keras.layers
    x = keras.Input((32, 32, 3), name="image")
    e1 = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    e2 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(e1)
    b = L.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu")(e2)
    d2 = L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(b)
    d2 = L.Concatenate()([d2, e2])
    d1 = L.UpSampling2D(interpolation="bilinear")(L.Conv2D(8, 3, padding="same", activation="relu")(d2))
    d1 = L.Concatenate()([d1, e1])
    return keras.Model(x, L.Conv2D(2, 1, activation="sigmoid", name="mask")(d1))


def _video(keras: Any, seed: int) -> Any:
    """Conv3D over short clips, GroupNormalization, global pooling."""
    L = keras.layers
    x = keras.Input((6, 16, 16, 3), name="clip")
    h = L.Conv3D(8, 3, padding="same")(x)
    h = L.Activation("elu")(L.GroupNormalization(groups=4)(h))
    h = L.MaxPooling3D((1, 2, 2))(h)
    h = L.Conv3D(8, (3, 3, 3), activation="relu")(h)
    return keras.Model(x, L.Dense(4, name="action")(L.GlobalAveragePooling3D()(h)))


def _mlp(keras: Any, seed: int) -> Any:
    """Standardized tabular features through assorted activations, LayerNorm and Dropout."""
    L = keras.layers
    x = keras.Input((20,), name="features")
    h = L.Dense(32, activation="selu")(x)
    h = L.LayerNormalization()(L.Dense(32, activation="swish")(h))
    h = L.LeakyReLU(negative_slope=0.1)(L.Dense(16)(L.Dropout(0.2)(h)))
    h = L.Dense(16, activation="gelu")(h)
    return keras.Model(x, L.Dense(3, activation="softmax", name="probs")(h))


def _lstm(keras: Any, seed: int) -> Any:
    """Sequences of any length: a stacked LSTM, the last state to a regression head."""
    L = keras.layers
    x = keras.Input((None, 5), name="steps")
    h = L.LSTM(12, return_sequences=True)(x)
    return keras.Model(x, L.Dense(2, name="value")(L.LSTM(8)(h)))


def _bigru_tagger(keras: Any, seed: int) -> Any:
    """A tagger: token ids of any length, Embedding, a bidirectional GRU, a softmax per step."""
    L = keras.layers
    x = keras.Input((None,), dtype="int32", name="tokens")
    h = L.Bidirectional(L.GRU(8, return_sequences=True))(L.Embedding(40, 8)(x))
    return keras.Model(x, L.Dense(5, activation="softmax", name="tags")(h))


def _wavenet(keras: Any, seed: int) -> Any:
    """Dilated causal Conv1D with gated activations and residuals over signals of any length."""
    L = keras.layers
    x = keras.Input((None, 3), name="signal")
    h = L.Conv1D(12, 1)(x)
    for rate in (1, 2, 4):
        t = L.Conv1D(12, 2, padding="causal", dilation_rate=rate, activation="tanh")(h)
        s = L.Conv1D(12, 2, padding="causal", dilation_rate=rate, activation="sigmoid")(h)
        h = L.Add()([h, L.Multiply()([t, s])])
    return keras.Model(x, L.Dense(4, name="forecast")(L.GlobalAveragePooling1D()(h)))


def _encoder(keras: Any, seed: int) -> Any:
    """A Transformer encoder block over fixed-length token ids: Embedding + PositionEmbedding (custom),
    self-attention with RMSNorm (custom), a feed-forward, mean pooling."""
    L = keras.layers
    x = keras.Input((16,), dtype="int32", name="ids")
    h = PositionEmbedding(16)(L.Embedding(64, 16)(x))
    a = L.MultiHeadAttention(num_heads=4, key_dim=4)(h, h)
    h = RMSNorm()(L.Add()([h, a]))
    f = L.Dense(16)(L.Dense(32, activation="relu")(h))
    h = RMSNorm()(L.Add()([h, f]))
    return keras.Model(x, L.Dense(3, activation="softmax", name="label")(L.GlobalAveragePooling1D()(h)))


def _cross_attention(keras: Any, seed: int) -> Any:
    """Queries of any length attend to a fixed context: two inputs, two outputs (per query and pooled)."""
    L = keras.layers
    q = keras.Input((None, 8), name="queries")
    c = keras.Input((10, 12), name="context")
    a = L.MultiHeadAttention(num_heads=2, key_dim=8)(q, c)
    h = L.LayerNormalization()(L.Add()([L.Dense(8)(q), a]))
    per_query = L.Dense(3, name="per_query")(h)
    pooled = L.Dense(1, name="pooled")(L.GlobalMaxPooling1D()(h))
    return keras.Model([q, c], [per_query, pooled])


def _masked_lstm(keras: Any, seed: int) -> Any:
    """Padded token ids (0 = padding) of any length: Embedding(mask_zero=True) feeding an LSTM."""
    L = keras.layers
    x = keras.Input((None,), dtype="int32", name="ids")
    h = L.LSTM(10)(L.Embedding(30, 8, mask_zero=True)(x))
    return keras.Model(x, L.Dense(2, activation="softmax", name="sentiment")(h))


def _masked_gru(keras: Any, seed: int) -> Any:
    """Fixed-length feature frames where all-zero frames are padding: Masking feeding a GRU."""
    L = keras.layers
    x = keras.Input((12, 4), name="frames")
    h = L.GRU(8, return_sequences=True)(L.Masking(mask_value=0.0)(x))
    return keras.Model(x, L.Dense(3, name="per_frame")(h))


def _image_preprocessing(keras: Any, seed: int) -> Any:
    """0-255 pixels of any size: Resizing, Rescaling, random augmentation (inactive at inference)."""
    L = keras.layers
    x = keras.Input((None, None, 3), name="pixels")
    h = L.Resizing(24, 24)(x)
    h = L.Rescaling(1 / 255.0)(h)
    h = L.RandomFlip("horizontal")(h)
    h = L.RandomRotation(0.1)(h)
    h = L.Conv2D(8, 3, activation="relu")(h)
    return keras.Model(x, L.Dense(4, activation="softmax", name="probs")(L.GlobalAveragePooling2D()(h)))


def _tabular_preprocessing(keras: Any, seed: int) -> Any:
    """Mixed inputs: adapted Normalization of numeric features, one-hot CategoryEncoding of a category id."""
    L = keras.layers
    num = keras.Input((6,), name="numeric")
    cat = keras.Input((1,), dtype="int32", name="category")
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(seed).normal(40.0, 12.0, (256, 6)).astype("float32"))
    h = L.Concatenate()([norm(num), L.CategoryEncoding(num_tokens=7, output_mode="one_hot")(cat)])
    return keras.Model([num, cat], L.Dense(1, name="score")(L.Dense(16, activation="relu")(h)))


def _multi_io(keras: Any, seed: int) -> Any:
    """An image and tabular metadata in, a class and a box regression out."""
    L = keras.layers
    img = keras.Input((20, 20, 1), name="scan")
    meta = keras.Input((4,), name="meta")
    h = L.GlobalMaxPooling2D()(L.DepthwiseConv2D(3, depth_multiplier=4, activation="relu")(img))
    h = L.Concatenate()([h, L.Dense(8, activation="relu")(meta)])
    return keras.Model([img, meta], [L.Dense(3, activation="softmax", name="finding")(h),
                                     L.Dense(4, name="box")(h)])


def _residual_mlp(keras: Any, seed: int) -> Any:
    model = ResidualMLP()
    model(np.zeros((2, 12), "float32"))  # built by calling it, as users do
    return model


def _siamese(keras: Any, seed: int) -> Any:
    model = SiameseConv()
    model({"anchor": np.zeros((2, 14, 14, 1), "float32"), "other": np.zeros((2, 14, 14, 1), "float32")})
    return model


def _app(name: str, size: int, **kwargs: Any) -> Callable[[Any, int], Any]:
    def build(keras: Any, seed: int) -> Any:
        return getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, **kwargs)
    build.__doc__ = f"keras.applications.{name} at {size}x{size}, {kwargs}"
    return build


def _image(size: int, high: float = 1.0) -> tuple[In, ...]:
    return (In("image", (size, size, 3), high=high),)  # named by position: Keras names the input itself


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("cnn_bn", "cnn", _cnn_bn, (In("digit", (28, 28, 1)),)),
    Spec("unet", "cnn", _unet, (In("image", (32, 32, 3)),)),
    Spec("video3d", "cnn", _video, (In("clip", (6, 16, 16, 3)),)),
    Spec("mlp", "mlp", _mlp, (In("features", (20,), low=-2.0, high=2.0),)),
    Spec("lstm", "sequence", _lstm, (In("steps", (None, 5), low=-1.0, high=1.0),)),
    Spec("bigru_tagger", "sequence", _bigru_tagger, (In("tokens", (None,), "int32", 0, 40),)),
    Spec("wavenet", "sequence", _wavenet, (In("signal", (None, 3), low=-1.0, high=1.0),), length=23),
    Spec("encoder", "attention", _encoder, (In("ids", (16,), "int32", 0, 64),)),
    Spec("cross_attention", "attention", _cross_attention,
         (In("queries", (None, 8), low=-1.0), In("context", (10, 12), low=-1.0))),
    Spec("masked_lstm", "masked_rnn", _masked_lstm, (In("ids", (None,), "int32", 1, 30, padded=True),)),
    Spec("masked_gru", "masked_rnn", _masked_gru, (In("frames", (12, 4), low=-1.0, padded=True),)),
    Spec("image_prep", "preprocessing", _image_preprocessing, (In("pixels", (None, None, 3), high=255.0),),
         length=30),
    Spec("tabular_prep", "preprocessing", _tabular_preprocessing,
         (In("numeric", (6,), low=16.0, high=64.0), In("category", (1,), "int32", 0, 7))),
    Spec("multi_io", "multi_io", _multi_io, (In("scan", (20, 20, 1)), In("meta", (4,), low=-1.0))),
    Spec("residual_mlp", "subclassed", _residual_mlp, (In("x", (12,), low=-1.0),), structure="single"),
    Spec("siamese", "subclassed", _siamese, (In("anchor", (14, 14, 1)), In("other", (14, 14, 1)))),
    Spec("mobilenetv3_features", "application",
         _app("MobileNetV3Small", 48, include_top=False, pooling="avg", minimalistic=True),
         _image(48, 255.0), structure="single"),
    Spec("efficientnetv2b1", "application", _app("EfficientNetV2B1", 32, classes=7), _image(32, 255.0),
         structure="single"),
    Spec("densenet121_features", "application", _app("DenseNet121", 32, include_top=False, pooling="max"),
         _image(32), structure="single"),
)}


def probe(spec: Spec, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs in the model's own range, keyed by input name; dynamic dims at spec.length."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in spec.inputs:
        shape = (batch, *(spec.length if d is None else d for d in i.shape))
        if np.dtype(i.dtype).kind == "f":
            arr = (i.low + rng.random(shape) * (i.high - i.low)).astype(i.dtype)
        else:
            low = max(int(i.low), 1) if i.padded else int(i.low)  # 0 is the padding id
            arr = rng.integers(low, int(i.high), shape).astype(i.dtype)
        if i.padded:  # a random-length tail of each row is padding (zeros: the mask value)
            for row in range(batch):
                arr[row, int(rng.integers(2, shape[1])):] = 0
        out[i.name] = arr
    return out


def native(spec: Spec, feed: dict[str, np.ndarray]) -> Any:
    """The feed in the structure the built model takes."""
    arrays = [feed[i.name] for i in spec.inputs]
    if spec.structure == "single":
        return arrays[0]
    if spec.structure == "list":
        return arrays
    return dict(feed)


def calibrate(model: Any, batches: list[Any]) -> int:
    """Moving statistics of every BatchNormalization := the mean over `batches` (as training would set
    them); how many layers were set. Without it, a deep untrained net is constant for every input."""
    bns = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    saved = [bn.momentum for bn in bns]
    for i, batch in enumerate(batches):
        for bn in bns:
            bn.momentum = i / (i + 1)
        model(batch, training=True)
    for bn, m in zip(bns, saved):
        bn.momentum = m
    return len(bns)

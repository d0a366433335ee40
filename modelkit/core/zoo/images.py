"""Dense and conv nets over the digits: mlp (the 64 pixels as features), cnn, multi_io, separable, the conv
autoencoder and keras.applications.MobileNetV2 (random init, never a download)."""
from __future__ import annotations

from typing import Any

from ...errors import TrainingError
from .blocks import BN_MOMENTUM, Options, classifier, conv_block, regularize


def mlp(keras: Any, o: Options) -> Any:
    L = keras.layers
    width = o.units or 128
    inp = keras.Input((64,), name="features")
    x = inp
    for i, n in enumerate((width, max(1, width // 2)), start=1):
        x = L.Dense(n, activation=None if o.bn else "relu", kernel_regularizer=o.reg, name=f"dense{i}")(x)
        if o.bn:
            x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"dense{i}_bn")(x)
            x = L.ReLU(name=f"dense{i}_relu")(x)
    return keras.Model(inp, classifier(keras, x, o), name="mlp")


def cnn(keras: Any, o: Options) -> Any:
    L = keras.layers
    width = o.units or 32
    inp = keras.Input((8, 8, 1), name="image")
    x = conv_block(keras, inp, width, o.reg, "block1", o.bn)
    x = conv_block(keras, x, width, o.reg, "block2", o.bn)
    x = L.MaxPooling2D(2, name="pool")(x)  # 4x4
    x = conv_block(keras, x, 2 * width, o.reg, "block3", o.bn)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, classifier(keras, x, o), name="cnn")


def multi_io(keras: Any, o: Options) -> Any:
    L = keras.layers
    width = o.units or 32
    image = keras.Input((8, 8, 1), name="image")
    features = keras.Input((8,), name="features")
    x = conv_block(keras, image, width, o.reg, "block1", o.bn)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = conv_block(keras, x, 2 * width, o.reg, "block2", o.bn)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    f = L.Dense(16, activation="relu", kernel_regularizer=o.reg, name="features_dense")(features)
    h = L.Concatenate(name="concat")([x, f])
    h = L.Dense(64, activation="relu", kernel_regularizer=o.reg, name="shared_dense")(h)
    probs = classifier(keras, h, o)
    # the regression head sees the shared trunk and the raw features (a skip connection)
    skip = L.Concatenate(name="intensity_in")([h, features])
    intensity = L.Dense(1, kernel_regularizer=o.reg, name="intensity")(skip)
    # outputs as a list (not a dict): the order is the Signature's, and Keras names them by layer
    return keras.Model([image, features], [probs, intensity], name="multi_io")


def separable(keras: Any, o: Options) -> Any:
    L = keras.layers
    width = o.units or 32
    inp = keras.Input((8, 8, 1), name="image")
    x = conv_block(keras, inp, width // 2 or 1, o.reg, "stem", o.bn)  # a plain conv first: 1 channel in
    x = conv_block(keras, x, width, o.reg, "sep1", o.bn, layer="SeparableConv2D")
    x = L.MaxPooling2D(2, name="pool")(x)  # 4x4
    x = conv_block(keras, x, 2 * width, o.reg, "sep2", o.bn, layer="SeparableConv2D")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, classifier(keras, x, o), name="separable")


def autoencoder(keras: Any, o: Options) -> Any:
    """8x8 -> 4x4 -> 2x2 code -> (Conv2DTranspose) 4x4 -> (UpSampling2D) 8x8, sigmoid pixels in [0, 1]."""
    L = keras.layers
    width = o.units or 16
    inp = keras.Input((8, 8, 1), name="image")
    x = conv_block(keras, inp, width, o.reg, "enc1", o.bn)
    x = L.MaxPooling2D(2, name="enc1_pool")(x)
    x = conv_block(keras, x, width // 2 or 1, o.reg, "enc2", o.bn)
    x = L.MaxPooling2D(2, name="code")(x)
    x = L.Conv2DTranspose(width // 2 or 1, 3, strides=2, padding="same", kernel_regularizer=o.reg,
                          name="dec1_deconv")(x)
    if o.bn:
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name="dec1_bn")(x)
    x = L.ReLU(name="dec1_relu")(x)
    x = L.UpSampling2D(2, name="dec2_up")(x)
    x = conv_block(keras, x, width, o.reg, "dec2", o.bn)
    out = L.Conv2D(1, 3, padding="same", activation="sigmoid", kernel_regularizer=o.reg, name="reconstruction")(x)
    return keras.Model(inp, out, name="autoencoder")


def mobilenetv2(keras: Any, o: Options) -> Any:
    input_shape = o.input_shape or (32, 32, 3)
    if len(input_shape) != 3 or min(input_shape[:2]) < 32 or input_shape[2] != 3:
        raise TrainingError(f"mobilenetv2 needs an input_shape (H, W, 3) with H, W >= 32, got {input_shape}")
    inp = keras.Input(tuple(input_shape), name="image")
    # weights=None: random init, never a download. Built on our input tensor so the model is flat.
    base = keras.applications.MobileNetV2(input_tensor=inp, alpha=o.alpha, include_top=False, weights=None,
                                          pooling="avg")
    if o.reg is not None:
        regularize(keras, base, o.reg)
    return keras.Model(inp, classifier(keras, base.output, o), name="mobilenetv2")

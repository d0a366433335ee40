"""A custom layer and a custom loss that modelkit trains, saves, reloads in safe mode and converts.

    modelkit train --model examples/custom_layer.py:build --loss FocalLoss --epochs 3 --out custom.keras
    MODELKIT_IMPORTS=examples/custom_layer.py modelkit convert custom.keras --to onnx

Both objects are registered with keras.saving.register_keras_serializable(package="modelkit_examples"),
so a .keras file that uses them loads with Keras safe mode on, in any process that imported this
module first. MODELKIT_IMPORTS names the modules (or .py files) modelkit imports in every process,
including its conversion child processes; without it, loading fails with "Could not locate class".
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="modelkit_examples")
class GatedDense(keras.layers.Layer):
    """A gated linear unit: (x W + b) * sigmoid(x V + c). Plain Keras ops, so every backend and
    exporter (ONNX, SavedModel, TFLite, TorchScript, torch.export) sees ordinary matmuls."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.kernel = self.add_weight(shape=(d, self.units), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        self.gate_kernel = self.add_weight(shape=(d, self.units), initializer="glorot_uniform", name="gate_kernel")
        self.gate_bias = self.add_weight(shape=(self.units,), initializer="zeros", name="gate_bias")

    def call(self, x):
        value = ops.matmul(x, self.kernel) + self.bias
        gate = ops.sigmoid(ops.matmul(x, self.gate_kernel) + self.gate_bias)
        return value * gate

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="modelkit_examples")
class FocalLoss(keras.losses.Loss):
    """Focal loss on integer labels and class probabilities: -(1 - p_true)^gamma * log(p_true).
    gamma = 0 is plain sparse categorical cross-entropy."""

    def __init__(self, gamma: float = 2.0, name: str = "focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        onehot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), num_classes)
        p_true = ops.sum(onehot * ops.clip(y_pred, 1e-7, 1.0), axis=-1)
        return -ops.power(1.0 - p_true, self.gamma) * ops.log(p_true)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


def build(num_classes: int = 10, units: int | None = None, seed: int = 0) -> keras.Model:
    """Digits as 64 features -> GatedDense -> softmax. modelkit passes the arguments this function
    declares (num_classes, units, seed, dropout, l1, l2, batch_norm) and reshapes the data to its input."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((64,), name="features")
    x = GatedDense(units or 32, name="gated")(inp)
    out = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="gated_mlp")

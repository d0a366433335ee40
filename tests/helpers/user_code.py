"""Source files a newcomer would write beside their model, shared by the tests that play that newcomer."""

# mylayers.py: a custom activation layer registered with Keras (package "mylayers")
SCALED_SWISH = '''import keras


@keras.saving.register_keras_serializable(package="mylayers")
class ScaledSwish(keras.layers.Layer):
    def __init__(self, scale=1.5, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * keras.ops.sigmoid(self.scale * x)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
'''

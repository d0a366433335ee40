"""The zoo's names, descriptions and tasks: what data preparation, the CLI and conversion need to know about
the reference models without importing their builders (modelkit.core.zoo)."""
from __future__ import annotations

# name -> one-line description (shown by `modelkit train --help`)
MODELS: dict[str, str] = {
    "mlp": "dense network; input 'features' (64,), output 'probs'",
    "cnn": "small conv net with batch norm; input 'image' (8, 8, 1), output 'probs'",
    "multi_io": "two inputs 'image' (8, 8, 1) + 'features' (8,); outputs 'probs' and 'intensity' (1,)",
    "mobilenetv2": "keras.applications.MobileNetV2 (random init, alpha 0.35); input 'image' (32, 32, 3), "
                   "output 'probs'",
    "lstm": "LSTM over the 8 image rows; input 'sequence' (8, 8), output 'probs'",
    "gru": "GRU over the 8 image rows; input 'sequence' (8, 8), output 'probs'",
    "transformer": "small transformer encoder over the 8 image rows (Dense projection + learned positional "
                   "embedding, MultiHeadAttention, LayerNormalization); input 'sequence' (8, 8), output 'probs'",
    "separable": "depthwise-separable conv net; input 'image' (8, 8, 1), output 'probs'",
    "autoencoder": "conv autoencoder (Conv2D, Conv2DTranspose, UpSampling2D); input 'image' (8, 8, 1), "
                   "output 'reconstruction' (8, 8, 1)",
}
# what each model's first output is: class probabilities, or a reconstruction of its input
TASKS: dict[str, str] = {name: "classification" for name in MODELS} | {"autoencoder": "reconstruction"}

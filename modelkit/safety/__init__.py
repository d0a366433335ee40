"""Checks that run before any engine opens a file, and never run any of it: paths (ONNX external data,
archive members), Keras configs, SavedModel graphs, pickles and TorchScript code in torch archives, TFLite
flatbuffers, and the sizes a file declares. docs/reliability.md has the trust model per format."""
from .paths import check_onnx_external_data, check_relative_member

__all__ = ["check_onnx_external_data", "check_relative_member"]

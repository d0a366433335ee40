"""Helpers shared by every test and by the benchmarks (one place: tests and benchmarks import from here)."""
from .cli import cli_process, ctrl_c, modelkit_script, sigint_default
from .load import LoadWorker
from .models import converted_to_torch, make_tiny_keras, make_tiny_onnx, masked_mean_int8_tflite, train_in_child
from .proc import stop_group
from .server import HOST, ServerProcess, add_version, call, free_port, http, metrics, tiny_expected, v2_request

__all__ = ["HOST", "LoadWorker", "ServerProcess", "add_version", "call", "cli_process", "converted_to_torch", "ctrl_c",
           "free_port", "http", "make_tiny_keras", "make_tiny_onnx", "masked_mean_int8_tflite", "metrics",
           "modelkit_script", "sigint_default", "stop_group", "tiny_expected", "train_in_child", "v2_request"]

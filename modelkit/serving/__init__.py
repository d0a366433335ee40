"""Serving: the built-in server (Open Inference Protocol v2 + TF Serving REST, dynamic batching,
hot-swap, Prometheus metrics) and packagers for TF Serving, TorchServe, Triton and KServe.

Nothing heavy is imported here; engines load when a model is loaded.
"""
from __future__ import annotations

"""Browser target: a static bundle (ONNX model + onnxruntime-web + a small ES module + a demo page)."""

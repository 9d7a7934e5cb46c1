"""Using a finished run: loading, inference backends (torch, ONNX, int8), prediction, export."""

"""Using a finished run: loading, inference engines (torch, compiled, ONNX, int8), prediction, export, HTTP."""

ENGINES = ("torch", "torch-fp32", "torch-compiled", "torch-int8", "onnx", "onnx-int8")
"""The inference engines `--backend` names (besides `auto`), defined in slmtune.serve.backends; kept here so that
the CLI lists them without importing torch."""

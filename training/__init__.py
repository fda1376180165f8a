"""tinyserve's training: Keras networks fitted, exported to ONNX and carded (see README.md)."""

import service  # noqa: F401  (onnxruntime's telemetry stays off here too: service/__init__.py)

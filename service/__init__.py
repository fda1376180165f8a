"""tinyserve's server: a model repository served by onnxruntime over JSON (see README.md)."""

import os

# onnxruntime's Linux builds (1.32 on) write a device id and usage events under ~/.cache and send
# them to Microsoft unless this is set before it loads; a model server keeps to itself.
# ORT_DISABLE_TELEMETRY=0 in the environment allows it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

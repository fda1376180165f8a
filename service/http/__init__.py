"""HTTP transport: the per-request gateway in front of FastAPI, and the corked HTTP protocol."""

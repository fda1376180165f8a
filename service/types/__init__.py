"""Protocol objects, one module per protocol: pydantic models for the OpenAPI document and tests."""

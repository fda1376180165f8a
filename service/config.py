"""Service settings: one class, read from `TINYSERVE_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_ROOT = Path(__file__).resolve().parents[1] / "models"


class Settings(BaseSettings):
    """Everything an operator can configure, e.g. `TINYSERVE_PORT=9000`."""

    model_config = SettingsConfigDict(env_prefix="TINYSERVE_", frozen=True)

    model_root: Path = Field(
        DEFAULT_MODEL_ROOT,
        description="Model repository: <model_root>/<name>/<version>/{model.onnx,card.json}.",
    )
    default_model: str | None = Field(
        None,
        description="Model used by POST /predict when the request names none. Without it, "
        "the model may be left out only when the repository holds exactly one model.",
    )
    host: str = Field("127.0.0.1", description="Interface to listen on; 0.0.0.0 exposes the server.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads per model session.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and of uvicorn."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Largest accepted request body in bytes; larger is 413."
    )
    max_rows: int = Field(4096, ge=1, description="Most rows (instances) accepted in one request.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, read once; tests call `get_settings.cache_clear()`."""
    return Settings()

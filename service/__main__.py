"""`python -m service`: serve the model repository with uvicorn, configured by TINYSERVE_* variables."""

from __future__ import annotations

import logging

import uvicorn

from service.config import get_settings
from service.main import create_app


def main() -> None:
    """Read the settings, build the app and serve it until interrupted."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()

"""``python -m services.config_manager``: settings → logging → uvicorn."""

from __future__ import annotations

import uvicorn

from services.common.auth import refuse_open_start
from services.common.logging import configure_logging
from services.config_manager import SERVICE_NAME
from services.config_manager.app import create_app
from services.config_manager.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level, service=SERVICE_NAME)
    refuse_open_start(
        host=settings.host, auth=settings.auth, required={"FLEET_TOKEN_FILE": settings.token_file}, service=SERVICE_NAME
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()

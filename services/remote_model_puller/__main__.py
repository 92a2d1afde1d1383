"""``python -m services.remote_model_puller``: settings → logging → uvicorn."""

from __future__ import annotations

import uvicorn

from services.common.auth import refuse_open_start
from services.common.logging import configure_logging
from services.remote_model_puller.app import create_app
from services.remote_model_puller.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level, service="remote_model_puller")
    refuse_open_start(
        host=settings.host,
        auth=settings.auth,
        required={"FLEET_TOKEN_FILE": settings.token_file},
        service="remote_model_puller",
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()

"""``python -m services.master``: settings → logging → uvicorn."""

from __future__ import annotations

import uvicorn

from services.common.auth import refuse_open_start
from services.common.logging import configure_logging
from services.master.app import create_app
from services.master.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level, service="master")
    refuse_open_start(
        host=settings.host,
        auth=settings.auth,
        required={"FLEET_TOKEN_FILE": settings.token_file, "FLEET_ADMIN_TOKENS_FILE": settings.admin_tokens_file},
        service="master",
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=5
    )


if __name__ == "__main__":
    main()

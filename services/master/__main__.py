"""``python -m services.master``: settings → logging → uvicorn."""

from __future__ import annotations

import uvicorn

from services.common.logging import configure_logging
from services.master.app import create_app
from services.master.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level, service="master")
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=5
    )


if __name__ == "__main__":
    main()

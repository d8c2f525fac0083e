"""`tailpipe api`: the app on uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import logging

import uvicorn

from pipeline.api.app import create_app
from pipeline.settings import Settings


def serve(settings: Settings, host: str = "0.0.0.0") -> int:
    app = create_app(settings)  # raises SettingsError before anything is bound
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        app, host=host, port=settings.api_port, lifespan="on", access_log=False,
        server_header=False, log_level="info",
    )  # fmt: skip
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind or start
        return exc.code if isinstance(exc.code, int) else 1
    return 0 if server.started else 1

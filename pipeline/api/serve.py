"""`tailpipe api`: the app on uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import uvicorn

from pipeline import logs
from pipeline.api.app import create_app
from pipeline.settings import Settings


def serve(settings: Settings, host: str = "0.0.0.0") -> int:
    app = create_app(settings)  # raises SettingsError before anything is bound
    logs.configure(settings.log_format, settings.log_level)
    config = uvicorn.Config(
        app, host=host, port=settings.api_port, lifespan="on", access_log=False,
        server_header=False, log_config=None,
    )  # fmt: skip
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind or start
        return exc.code if isinstance(exc.code, int) else 1
    return 0 if server.started else 1

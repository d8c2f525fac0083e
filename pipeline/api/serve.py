"""`tailpipe api`: the app on uvicorn until SIGTERM or SIGINT (`pipeline.web.server`)."""

from __future__ import annotations

from pipeline import logconfig
from pipeline.api.app import create_app
from pipeline.settings import Settings
from pipeline.web import server


def serve(settings: Settings, host: str = "0.0.0.0") -> int:
    app = create_app(settings)  # raises SettingsError before anything is bound
    logconfig.configure(settings.log_format, settings.log_level)
    return server.run(app, host, settings.api_port)

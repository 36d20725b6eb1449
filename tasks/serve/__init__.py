"""HTTP service answering ``GET /recommendations/{user_id}`` from DynamoDB.

``create_app()`` builds the FastAPI app; ``python -m tasks.serve`` runs it.
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tasks.serve.config import Settings
from tasks.serve.deps import RecsTable
from tasks.serve.routes import health, recommendations
from tasks.table import CorruptRowError

log = logging.getLogger(__name__)


class HeadAsGet:
    """ASGI middleware: ``HEAD`` on any ``GET`` route answers as ``GET`` would (status and
    headers, Content-Length included) without the body. Load balancers and uptime checks use HEAD."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def create_app(settings: Settings | None = None, table: RecsTable | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="recsys recommendations", version="1.0.0",
                  description="Precomputed top-N recommendations per user, one model version per replica.")
    app.state.settings = settings
    app.state.table = table or RecsTable(settings.recsys_table, settings.model_version, settings.marker_ttl_seconds)
    app.include_router(health)
    app.include_router(recommendations)

    @app.exception_handler(BotoCoreError)
    @app.exception_handler(ClientError)
    async def backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # DynamoDB unreachable, stalled, throttled or refusing us: the client may retry. One line
        # in the log, no traceback; nothing about the backend in the body.
        log.warning("%s %s: DynamoDB unavailable: %s: %s", request.method, request.url.path,
                    type(exc).__name__, exc)
        return JSONResponse(status_code=503, content={"detail": "backend unavailable"})

    @app.exception_handler(CorruptRowError)
    async def corrupt_row(request: Request, exc: CorruptRowError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)  # names the table and key
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug: the server logs its traceback once (Starlette re-raises after this handler).
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    app.add_middleware(HeadAsGet)
    return app

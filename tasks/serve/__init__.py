"""HTTP service answering ``GET /recommendations/{user_id}`` from DynamoDB.

``create_app()`` builds the FastAPI app; ``python -m tasks.serve`` runs it.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tasks.serve.cache import DeadlineExceeded, Overloaded
from tasks.serve.config import MAX_HEADER_BYTES, Settings
from tasks.serve.deps import Reader, RecsTable
from tasks.serve.routes import NO_STORE, health, metrics, recommendations
from tasks.table import CorruptRowError

log = logging.getLogger(__name__)
ECHO_CHARS = 40  # how much of a rejected value a 422 quotes back


def short(value: Any) -> Any:
    """A rejected input as a 422 may quote it: a prefix, never the whole (a 10 KB id stays in the log
    of whoever sent it, not in our answers)."""
    if isinstance(value, str | bytes):
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + f"... ({len(text)} characters)"
    if value is None or isinstance(value, bool | int | float):
        return value
    return short(repr(value))


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


class HeaderLimit:
    """ASGI middleware: 431 for a request whose line and headers exceed ``MAX_HEADER_BYTES``. The
    server's parser bounds what it buffers (h11's max_incomplete_event_size) but takes any head
    that arrives complete in one read (up to 256 KB on loopback); this holds the line exactly."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
            if size > MAX_HEADER_BYTES:
                body = b'{"detail":"request headers too large"}'
                await send({"type": "http.response.start", "status": 431, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, reader: Reader | None = None) -> FastAPI:
    """The app; ``reader`` replaces the DynamoDB reads (tests and the bench stub them there, so
    the cache and the concurrency bound above them are what ships)."""
    settings = settings or Settings()
    app = FastAPI(title="recsys recommendations", version="1.0.0",
                  description="Precomputed top-N recommendations per user, one model version per replica.")
    app.state.settings = settings
    app.state.table = RecsTable.from_settings(settings, reader)
    app.include_router(health)
    app.include_router(metrics)
    app.include_router(recommendations)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler, with each rejected value cut to a prefix
        errors = [{k: short(v) if k == "input" else v for k, v in err.items()} for err in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(Overloaded)
    async def shed(request: Request, exc: Overloaded) -> JSONResponse:
        # Every DynamoDB slot stayed busy for the whole wait: answer now rather than queue behind a
        # slow backend. Counted in /metrics (recsys_requests_shed_total), not logged per request.
        return JSONResponse(status_code=503, content={"detail": "overloaded, retry"},
                            headers={**NO_STORE, "Retry-After": "1"})

    @app.exception_handler(DeadlineExceeded)
    @app.exception_handler(BotoCoreError)
    @app.exception_handler(ClientError)
    async def backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # DynamoDB unreachable, stalled, throttled or refusing us: the client may retry. One line
        # in the log, no traceback; nothing about the backend in the body.
        log.warning("%s %s: DynamoDB unavailable: %s: %s", request.method, request.url.path,
                    type(exc).__name__, exc)
        return JSONResponse(status_code=503, content={"detail": "backend unavailable"},
                            headers={**NO_STORE, "Retry-After": "1"})

    @app.exception_handler(CorruptRowError)
    async def corrupt_row(request: Request, exc: CorruptRowError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)  # names the table and key
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug: the server logs its traceback once (Starlette re-raises after this handler).
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    app.add_middleware(HeadAsGet)
    app.add_middleware(HeaderLimit)
    return app

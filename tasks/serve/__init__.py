"""HTTP service answering ``GET /recommendations/{user_id}`` from DynamoDB.

``create_app()`` builds the FastAPI app; ``python -m tasks.serve`` runs it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tasks.serve.config import Settings
from tasks.serve.deps import RecsTable
from tasks.serve.routes import health, recommendations

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, table: RecsTable | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="recsys recommendations", version="1.0.0",
                  description="Precomputed top-N recommendations per user, one model version per replica.")
    app.state.settings = settings
    app.state.table = table or RecsTable(settings.recsys_table, settings.model_version, settings.marker_ttl_seconds)
    app.include_router(health)
    app.include_router(recommendations)

    @app.exception_handler(Exception)
    async def backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # DynamoDB unreachable, throttled or misconfigured: the client may retry.
        log.exception("request %s failed", request.url.path)
        return JSONResponse(status_code=503, content={"detail": f"backend unavailable: {type(exc).__name__}"})

    return app

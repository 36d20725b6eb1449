"""Routers: health checks and recommendations."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query

from tasks.constants import MAX_ID_LENGTH, USER_ID_PATTERN, USER_ID_RULE
from tasks.serve.deps import SettingsDep, TableDep
from tasks.serve.models import ErrorBody, Health, Item, Recommendations

health = APIRouter(tags=["health"])
recommendations = APIRouter(prefix="/recommendations", tags=["recommendations"])


@health.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@health.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
def readyz(settings: SettingsDep, table: TableDep) -> Health:
    """Readiness: the served version exists and is complete."""
    marker = table.marker()
    if marker is None:
        raise HTTPException(503, f"model version {settings.model_version} is not complete in {settings.recsys_table}")
    return Health(status="ready", model_version=settings.model_version, users=marker["users"])


UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=USER_ID_PATTERN,
                             description=f"the user's id as in the ratings data ({USER_ID_RULE}), percent-encoded")]


@recommendations.get("/{user_id}", response_model=Recommendations,
                     responses={404: {"model": ErrorBody}, 422: {"description": "malformed request"},
                                500: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def get_recommendations(user_id: UserId, settings: SettingsDep, table: TableDep,
                        n: Annotated[int, Query(ge=1, le=100, description="how many items")] = 10,
                        ) -> Recommendations:
    """Top-n precomputed items for a user; unknown users get the version's popular list."""
    if table.marker() is None:
        raise HTTPException(503, f"model version {settings.model_version} is not complete")
    items = table.recommendations(user_id)
    source: Literal["personal", "fallback"] = "personal"
    if items is None:
        items, source = table.fallback(), "fallback"
    if items is None:
        raise HTTPException(404, f"no recommendations for user {user_id} and no fallback list")
    return Recommendations(user_id=user_id, model_version=settings.model_version, source=source,
                           items=[Item(**it) for it in items[:n]])

"""Response models (they are also the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Item(BaseModel):
    item_id: str
    score: float = Field(description="the ranking score (higher ranks first; not a predicted rating), "
                                     "or the rating count for the fallback list")
    title: str


class Recommendations(BaseModel):
    user_id: str
    model_version: str
    source: Literal["personal", "fallback"] = Field(
        description="'fallback' = the version's most-popular list, for users the model does not know")
    items: list[Item]


class Health(BaseModel):
    status: str
    model_version: str | None = None
    users: int | None = None


class ErrorBody(BaseModel):
    detail: str

"""Serving settings from the environment (pydantic-settings): MODEL_VERSION is required."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.constants import DEFAULT_TABLE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(protected_namespaces=(), extra="ignore")

    recsys_table: str = Field(DEFAULT_TABLE, description="DynamoDB table with the recommendations")
    model_version: str = Field(..., min_length=1, description="version this replica serves (set by the deploy)")
    marker_ttl_seconds: float = Field(30.0, description="how long a readiness check is cached")

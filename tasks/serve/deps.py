"""Typed dependencies: the settings and the table reader (overridable in tests)."""

from __future__ import annotations

import functools
import time
from typing import Annotated

from fastapi import Depends, Request

from tasks import table
from tasks.constants import FALLBACK_USER
from tasks.serve.config import Settings


class RecsTable:
    """Reads one model version's rows; caches the completion marker briefly."""

    def __init__(self, name: str, version: str, marker_ttl: float = 30.0, client=None):
        self.name, self.version, self.marker_ttl = name, version, marker_ttl
        self._client = client
        self._marker: tuple[float, dict | None] = (-1e18, None)

    @functools.cached_property
    def client(self):
        if self._client is not None:
            return self._client
        from tasks import storage

        return storage.client("dynamodb", profile="serve")  # a tight budget: 503 in < 2 s

    def marker(self) -> dict | None:
        at, value = self._marker
        if value is None or time.monotonic() - at > self.marker_ttl:
            value = table.get_marker(self.name, self.version, client=self.client)
            self._marker = (time.monotonic(), value)
        return value

    def recommendations(self, user_id: str) -> list[dict] | None:
        return table.get_recommendations(self.name, self.version, user_id, client=self.client)

    def fallback(self) -> list[dict] | None:
        return self.recommendations(FALLBACK_USER)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_table(request: Request) -> RecsTable:
    return request.app.state.table


SettingsDep = Annotated[Settings, Depends(get_settings)]
TableDep = Annotated[RecsTable, Depends(get_table)]

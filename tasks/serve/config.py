"""Serving settings from the environment (pydantic-settings): MODEL_VERSION is required."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.layout import DEFAULT_TABLE

# The request line and headers may hold this much; more is refused (431). h11's knob
# (tasks.serve.__main__.uvicorn_options) bounds what the server buffers while headers are incomplete;
# tasks.serve.HeaderLimit refuses a larger head that arrived complete in one read.
MAX_HEADER_BYTES = 16 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(protected_namespaces=(), extra="ignore")

    recsys_table: str = Field(DEFAULT_TABLE, description="DynamoDB table with the recommendations")
    model_version: str = Field(..., min_length=1, description="version this replica serves (set by the deploy)")
    marker_ttl_seconds: float = Field(30.0, description="how long a readiness check is cached")
    # Rows are immutable for their version (the marker protocol), so a cached row is never stale:
    # the only bound is memory. 64 MiB holds ~50,000 decoded top-10 rows.
    recsys_serve_cache_bytes: int = Field(64 * 2**20, ge=0,
                                          description="in-process row cache bound in bytes (0: no cache)")
    # How many DynamoDB reads may be in flight at once, and how long a request may wait for one of
    # those slots before it is shed with a 503. A stalled call holds its slot for at most the
    # serve retry budget (tasks.storage.worst_case_seconds("serve"), 2.5 s); a request answers
    # within the deadline below even when DynamoDB stalls.
    recsys_serve_ddb_concurrency: int = Field(16, ge=1, description="DynamoDB reads in flight at most")
    recsys_serve_queue_seconds: float = Field(0.1, ge=0, description="longest wait for a DynamoDB slot")
    # A request's whole budget for DynamoDB (slot wait included): past it the answer is a 503 even
    # if botocore is still retrying. botocore's own budget is not enough: its standard-mode backoff
    # before the second attempt is rand(0, 1) s on this botocore, so two 0.5 s read timeouts can
    # take 2 s (measured: 12 of 1,844 503s over 2 s under a stall before this deadline existed).
    # The read goes on in its thread, holding its slot, so the bound still counts it.
    recsys_serve_deadline_seconds: float = Field(1.5, gt=0, description="a request's DynamoDB time budget")
    # what HTTP caches may do with a 200: the URL serves another version after the next deploy
    recsys_serve_cache_control: str = Field("public, max-age=60", description="Cache-Control of a 200")

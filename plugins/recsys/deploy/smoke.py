"""The smoke test of a rolled-out version: ``/readyz`` reports it, one user gets recommendations."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def http_json(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # nosec B310 # scheme checked above
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def smoke_check(url: str | None, model_version: str, timeout: float = 60.0) -> Callable[[Callable[[], str | None]],
                                                                                          dict | None]:
    """The smoke test of an ECS roll: ``/readyz`` at ``url`` (``RECSYS_SMOKE_URL``), else at the
    endpoint of the service's load balancer (``endpoint()`` finds it); none without either."""
    def smoke(endpoint: Callable[[], str | None]) -> dict | None:
        base = url or endpoint()
        if not base:
            log.info("no smoke test: RECSYS_SMOKE_URL is unset and the service has no load balancer")
            return None
        return smoke_test(base, model_version, timeout=timeout)

    return smoke


def smoke_test(base_url: str, model_version: str, user_id: str | None = None, timeout: float = 60.0) -> dict:
    """Wait for /readyz to report ``model_version``, then fetch one user's recommendations."""
    deadline = time.monotonic() + timeout
    status, body = 0, dict[str, Any]()
    while time.monotonic() < deadline:
        try:
            status, body = http_json(f"{base_url}/readyz")
            if status == 200 and body.get("model_version") == model_version:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{base_url}/readyz did not report {model_version} within {timeout:.0f}s "
                           f"(last: {status} {body})")
    if user_id is not None:
        status, recs = http_json(f"{base_url}/recommendations/{user_id}?n=5")
        if status != 200 or not recs.get("items"):
            raise RuntimeError(f"smoke test: /recommendations/{user_id} answered {status} {recs}")
        return recs
    return body

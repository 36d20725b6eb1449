"""Read and write ``s3://`` URIs and local paths through one small interface.

boto3 picks up credentials, region and ``AWS_ENDPOINT_URL`` from the standard
environment, so the same code talks to real AWS or to an emulator.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def join(base: str, *parts: str) -> str:
    """Join URI or path segments with single slashes."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def app_id() -> str:
    """``recsys-<component>`` (serve, score, train, data): added to every request's User-Agent,
    so CloudTrail (and the IAM test) can tell the serving app from the jobs."""
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", "") or ""
    parts = name.split(".")
    return f"recsys-{parts[1]}" if len(parts) > 1 and parts[0] == "tasks" else "recsys-jobs"


# The one retry policy of every AWS client (botocore's own retries, layered once: above them only
# the batch writer resends UnprocessedItems/UnprocessedKeys). Each attempt is bounded by explicit
# connect/read timeouts; attempts back off exponentially with full jitter (botocore's "standard"
# backoff; "adaptive" adds client-side rate limiting when throttled).
RETRY_PROFILES: dict[str, dict] = {
    # stages (snapshot, train, score, publish) and the Airflow side: bulk work that should ride out
    # a few seconds of throttling or a dropped connection.
    "jobs": {"mode": "adaptive", "total_max_attempts": 5, "connect_timeout": 5.0, "read_timeout": 60.0},
    # the serving app: one request's budget. botocore alone may take worst_case_seconds("serve")
    # (2.5 s) on a stalled DynamoDB; the app's own deadline (RECSYS_SERVE_DEADLINE_SECONDS, 1.5 s)
    # answers 503 before that. The caller retries a 503, not us.
    "serve": {"mode": "standard", "total_max_attempts": 2, "connect_timeout": 0.25, "read_timeout": 0.5},
}


def worst_case_seconds(profile: str) -> float:
    """Longest one call to a stalled or unreachable endpoint can take before it raises: every
    attempt timing out at connect + read, plus the largest backoff between them. botocore's
    standard and adaptive backoff is rand(0, 1) x min(2**i, 20) s by default (its opt-in newer
    retry behaviour scales non-throttling backoff by 0.05, which only shortens it)."""
    p = RETRY_PROFILES[profile]
    attempts = p["total_max_attempts"]
    return attempts * (p["connect_timeout"] + p["read_timeout"]) + sum(min(2 ** i, 20) for i in range(attempts - 1))


def client_config(profile: str = "jobs"):
    from botocore.config import Config

    p = RETRY_PROFILES[profile]
    return Config(retries={"mode": p["mode"], "total_max_attempts": p["total_max_attempts"]},
                  connect_timeout=p["connect_timeout"], read_timeout=p["read_timeout"],
                  max_pool_connections=32, user_agent_appid=app_id())


@functools.cache
def client(service: str, profile: str = "jobs"):
    """A boto3 client with the retry ``profile`` of :data:`RETRY_PROFILES` ("jobs" or "serve")."""
    import boto3

    return boto3.client(service, config=client_config(profile))


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def open_binary(uri: str):
    """A file-like object reading ``uri`` as a stream (S3: the GetObject body), for readers that
    must not hold a whole large file in memory. Close it when done."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    return open(uri, "rb")  # noqa: SIM115 - the caller closes it


def read_head(uri: str, n: int) -> bytes:
    """The first ``n`` bytes (fewer if the file is shorter)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3 = client("s3")
        try:
            return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{n - 1}")["Body"].read()
        except s3.exceptions.ClientError as err:
            if err.response["Error"]["Code"] == "InvalidRange":  # an empty object
                return b""
            raise
    with open(uri, "rb") as f:
        return f.read(n)


def write_bytes(uri: str, data: bytes) -> None:
    write_file(uri, io.BytesIO(data))


def write_file(uri: str, fileobj) -> None:
    """Write a seekable binary file object to ``uri`` (not copied into one ``bytes`` first: the
    S3 body is read from it); a local file is replaced atomically."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        client("s3").put_object(Bucket=bucket, Key=key, Body=fileobj)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        shutil.copyfileobj(fileobj, f)
    tmp.replace(path)  # atomic on one filesystem: readers never see half a file


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3 = client("s3")
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError as err:
            if err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True
    return Path(uri).exists()


def delete(uri: str) -> None:
    """Delete one object (file); a missing one is not an error."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        client("s3").delete_object(Bucket=bucket, Key=key)
    else:
        Path(uri).unlink(missing_ok=True)


def list_files(prefix: str) -> list[str]:
    """Every object (file) below ``prefix``, sorted, as full URIs or paths."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        paginator = client("s3").get_paginator("list_objects_v2")
        out: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            out.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        return sorted(out)
    root = Path(prefix)
    if root.is_file():
        return [str(root)]
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def delete_prefix(prefix: str) -> int:
    """Delete every object (file) below ``prefix``; returns how many. S3: DeleteObjects in
    batches of 1,000, failing with the keys S3 refused."""
    files = list_files(prefix)
    if is_s3(prefix):
        bucket, _ = split_s3(prefix)
        s3 = client("s3")
        for start in range(0, len(files), 1000):
            keys = [{"Key": split_s3(f)[1]} for f in files[start:start + 1000]]
            errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True}).get("Errors", [])
            if errors:
                raise OSError(f"S3 refused to delete {len(errors)} object(s) below {prefix}, e.g. "
                              f"{errors[0].get('Key')}: {errors[0].get('Code')} {errors[0].get('Message')}")
    else:
        for f in files:
            Path(f).unlink()
    return len(files)


def copy(src: str, dst: str) -> None:
    if is_s3(src) and is_s3(dst):
        sb, sk = split_s3(src)
        db, dk = split_s3(dst)
        client("s3").copy_object(Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk})
    elif not is_s3(src) and not is_s3(dst):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    else:
        write_bytes(dst, read_bytes(src))


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_parquet(uri: str, columns: list[str] | None = None):
    import pandas as pd

    return pd.read_parquet(io.BytesIO(read_bytes(uri)), columns=columns)


def write_parquet(uri: str, df) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_bytes(uri, buf.getvalue())


def setup_logging() -> None:
    """Log format for container entrypoints: one line per event, to stderr."""
    logging.basicConfig(
        level=os.environ.get("RECSYS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def release_freed_memory() -> None:
    """Hand freed memory back to the OS: Arrow's pool keeps the buffers of a Parquet read, glibc
    the many small arrays of a chunked pass; without this the peak counts them twice. No-op
    where neither applies."""
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(ImportError):
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)

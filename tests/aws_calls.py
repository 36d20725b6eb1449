"""Every AWS call that reaches the moto server, as IAM would authorise it.

:class:`Recorder` wraps moto's WSGI app: each request is noted with its caller (from the
User-Agent: the amazon provider's hooks add ``Airflow/<version>``; ``tasks.storage`` adds
``app/recsys-<stage>``), service (the SigV4 credential scope) and operation. :func:`requests`
turns a call into the IAM ``(action, resource)`` pairs AWS would check, and :func:`denied`
evaluates them against a policy document (Allow statements, ``*``/``?`` wildcards; no Deny,
no conditions). Calls of subprocesses (``airflow dags test``, stages, the serving app) are
recorded too: they all talk to the same server.
"""

from __future__ import annotations

import io
import json
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"


@dataclass(frozen=True)
class Call:
    caller: str  # "airflow" | "recsys-<component>" | "other"
    service: str
    operation: str
    params: dict = field(default_factory=dict, hash=False, compare=False)


def caller_of(user_agent: str) -> str:
    match = re.search(r"\bapp/(recsys-[a-z]+)", user_agent)
    if match:
        return match.group(1)
    return "airflow" if "Airflow/" in user_agent else "other"


def s3_operation(method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[str, dict]:
    parts = unquote(path).lstrip("/").split("/", 1)
    bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
    params = {"Bucket": bucket, "Key": key}
    if not key:
        if method == "POST" and "delete" in query:
            keys = [el.text for el in ET.fromstring(body).iter() if el.tag.endswith("Key")]
            return "DeleteObjects", {**params, "Keys": keys}
        op = {"GET": "ListObjectsV2" if "list-type" in query else "ListObjects", "HEAD": "HeadBucket",
              "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, method)
        if "location" in query:
            op = "GetBucketLocation"
        return op, params
    if method == "PUT" and "x-amz-copy-source" in headers:
        src = unquote(headers["x-amz-copy-source"]).lstrip("/").split("?")[0]
        return "CopyObject", {**params, "CopySource": src}
    if "uploadId" in query or "uploads" in query:
        return {"POST": "CompleteMultipartUpload" if "uploadId" in query else "CreateMultipartUpload",
                "PUT": "UploadPart", "DELETE": "AbortMultipartUpload"}.get(method, method), params
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(
        method, method), params


class Recorder:
    def __init__(self):
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def wrap(self, app):
        def middleware(environ, start_response):
            try:
                self._note(environ)
            except Exception as err:  # a recorder bug must not break the request
                self.calls.append(Call("other", "recorder-error", repr(err)))
            return app(environ, start_response)

        return middleware

    def _note(self, environ) -> None:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request", auth)
        if not scope:
            return  # moto-api calls (reset), unsigned requests
        service = scope.group(1)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = b""
        if length and (service != "s3" or environ["REQUEST_METHOD"] == "POST"):
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if service == "s3":
            op, params = s3_operation(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), query, headers, body)
        elif "x-amz-target" in headers:
            op = headers["x-amz-target"].rsplit(".", 1)[-1]
            params = json.loads(body or b"{}")
        else:  # query protocol (SNS, IAM, STS, EC2)
            form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
            op, params = form.pop("Action", "?"), form
        with self._lock:
            self.calls.append(Call(caller_of(headers.get("user-agent", "")), service, op, params))


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def _family(task_definition: str) -> str:
    return task_definition.rsplit("/", 1)[-1].split(":")[0]


def requests(call: Call) -> list[tuple[str, str]]:
    """The IAM (action, resource) pairs AWS authorises for ``call``."""
    p, op, svc = call.params, call.operation, call.service
    if svc == "s3":
        bucket_arn = f"arn:aws:s3:::{p['Bucket']}"
        obj = f"{bucket_arn}/{p['Key']}"
        if op in ("ListObjectsV2", "ListObjects", "HeadBucket"):
            return [("s3:ListBucket", bucket_arn)]
        if op == "GetBucketLocation":
            return [("s3:GetBucketLocation", bucket_arn)]
        if op in ("GetObject", "HeadObject"):
            return [("s3:GetObject", obj)]
        if op in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            return [("s3:PutObject", obj)]
        if op == "AbortMultipartUpload":
            return [("s3:AbortMultipartUpload", obj)]
        if op == "CopyObject":
            return [("s3:GetObject", f"arn:aws:s3:::{p['CopySource']}"), ("s3:PutObject", obj)]
        if op == "DeleteObject":
            return [("s3:DeleteObject", obj)]
        if op == "DeleteObjects":
            return [("s3:DeleteObject", f"{bucket_arn}/{k}") for k in p["Keys"]]
        return [(f"s3:{op}", bucket_arn)]
    if svc == "dynamodb":
        tables = list(p.get("RequestItems", {})) or [p.get("TableName") or
                                                     p.get("TableCreationParameters", {}).get("TableName", "*")]
        return [(f"dynamodb:{op}", _arn("dynamodb", f"table/{t}")) for t in tables]
    if svc == "sns":
        if op == "CreateTopic":
            return [("sns:CreateTopic", _arn("sns", p["Name"]))]
        return [(f"sns:{op}", p.get("TopicArn") or p.get("TargetArn") or "*")]
    if svc == "ecr":
        if op == "GetAuthorizationToken":
            return [("ecr:GetAuthorizationToken", "*")]
        names = p.get("repositoryNames") or [p.get("repositoryName", "*")]
        return [(f"ecr:{op}", _arn("ecr", f"repository/{n}")) for n in names]
    if svc == "ecs":
        cluster = (p.get("cluster") or "default").rsplit("/", 1)[-1]
        if op in ("UpdateService", "DescribeServices"):
            names = p.get("services") or [p.get("service")]
            return [(f"ecs:{op}", _arn("ecs", f"service/{cluster}/{n.rsplit('/', 1)[-1]}")) for n in names]
        if op == "RunTask":
            return [("ecs:RunTask", _arn("ecs", f"task-definition/{_family(p['taskDefinition'])}"))]
        if op in ("DescribeTasks", "StopTask"):
            tasks = p.get("tasks") or [p.get("task")]
            return [(f"ecs:{op}", _arn("ecs", f"task/{cluster}/{t.rsplit('/', 1)[-1]}")) for t in tasks]
        if op == "RegisterTaskDefinition":  # the roles it names must be passed
            roles = [p[k] for k in ("taskRoleArn", "executionRoleArn") if p.get(k)]
            return [("ecs:RegisterTaskDefinition", "*"), *(("iam:PassRole", r) for r in roles)]
        return [(f"ecs:{op}", "*")]
    if svc == "logs":
        group = p.get("logGroupName", "*")
        stream = p.get("logStreamName", "*")
        return [(f"logs:{op}", _arn("logs", f"log-group:{group}:log-stream:{stream}"))]
    return [(f"{svc}:{op}", "*")]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _match(pattern: str, value: str) -> bool:
    # IAM wildcards: * any run, ? one character; nothing else is special
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _applies(stmt: dict, action: str, resource: str) -> bool:
    return (any(_match(a.lower(), action.lower()) for a in _as_list(stmt.get("Action", [])))
            and any(_match(r, resource) for r in _as_list(stmt.get("Resource", []))))


def allowed(policy: dict, action: str, resource: str) -> bool:
    """IAM's rule for one policy: an explicit Deny wins, else some Allow must apply."""
    statements = _as_list(policy["Statement"])
    if any(s.get("Effect") == "Deny" and _applies(s, action, resource) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and _applies(s, action, resource) for s in statements)


def denied(policy: dict, calls) -> list[str]:
    """Each (action, resource) of ``calls`` that ``policy`` does not allow, once."""
    out = []
    for call in calls:
        for action, resource in requests(call):
            line = f"{action} on {resource} ({call.operation})"
            if not allowed(policy, action, resource) and line not in out:
                out.append(line)
    return out


def role_of(caller: str) -> str | None:
    """The role a caller runs as in production: the worker's (MWAA execution role), the serving
    task role, the jobs task role; None for the test harness itself."""
    if caller == "airflow":
        return "airflow"
    if caller == "recsys-serve":
        return "serve"
    return "jobs" if caller.startswith("recsys-") else None


def violations(calls, settings) -> dict[str, list[str]]:
    """Per role, the requests its policy in deploy/iam/ would refuse (empty: all allowed)."""
    from recsys import infra

    values = infra.policy_values(settings, ACCOUNT)
    out = {}
    for role in ("airflow", "jobs", "serve"):
        policy = infra.render_policy(infra.policy_dir(settings) / infra.POLICY_FILES[role], values)
        refused = denied(policy, [c for c in calls if role_of(c.caller) == role])
        if refused:
            out[role] = refused
    return out


def roles_seen(calls) -> set[str]:
    return {role_of(c.caller) for c in calls} - {None}


__all__ = ["ACCOUNT", "REGION", "Call", "Recorder", "allowed", "denied", "requests", "role_of", "roles_seen",
           "violations"]

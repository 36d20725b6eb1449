"""Shared fixtures: one moto *server* over HTTP per session, reset before each test.

Code under test reaches it exactly as it would reach AWS: through the standard
``AWS_ENDPOINT_URL`` variable and the ``aws_default`` Airflow connection.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import urllib.request

import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from werkzeug.serving import make_server

from tests.aws_calls import Recorder

# the Docker tier's session fixtures (engine, images, registry), shared by every module that uses them
pytest_plugins = ["tests.docker_fixtures"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingMotoServer(ThreadedMotoServer):
    """moto's threaded server with every request noted (caller, service, operation, resources),
    from this process and from every subprocess that reaches it: see tests/aws_calls.py."""

    def __init__(self, recorder: Recorder, **kwargs):
        super().__init__(**kwargs)
        self.recorder = recorder

    def _server_entry(self) -> None:  # ThreadedMotoServer's, with the app wrapped
        try:
            from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

            try:  # moto >= 5.1.11; older moto serves with werkzeug's default handler
                from moto.moto_server.werkzeug_app import MotoRequestHandler as handler
            except ImportError:
                handler = None
            app = self.recorder.wrap(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=handler)
        except BaseException as e:  # start() waits for the ready event: never leave it unset
            self.startup_error = e
            self._server_ready_event.set()
            raise
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        self.startup_error = None
        super().start()
        if self.startup_error is not None:
            raise RuntimeError(f"moto server did not start: {self.startup_error!r}") from self.startup_error


RECORDER = Recorder()


@pytest.fixture
def aws_calls(moto_endpoint):
    """The AWS calls made from here on in this test (a list of tests.aws_calls.Call)."""
    RECORDER.calls.clear()
    return RECORDER.calls


@pytest.fixture(scope="session")
def moto_endpoint():
    server = RecordingMotoServer(RECORDER, ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "extra": {"endpoint_url": endpoint,
                                                                              "region_name": "us-east-1"}}),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@functools.cache
def _infra_session():
    """One boto3 session for the fixtures' set-up: a new session re-reads every service model
    from botocore's JSON (~1 s per test for S3, DynamoDB and SNS); the code under test still
    builds its own clients."""
    import boto3

    return boto3.Session(region_name="us-east-1")


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """A clean account with the pipeline's bucket, table and topic (no ECS)."""
    from tasks import storage

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    storage.client.cache_clear()
    monkeypatch.setenv("RECSYS_BUCKET", "recsys-test")
    monkeypatch.setenv("RECSYS_TABLE", "recs-test")
    from recsys import infra
    from recsys.settings import Settings

    out = infra.up(Settings(), session=_infra_session(), ecs=False)
    yield {**out, "endpoint": moto_endpoint, "bucket": "recsys-test", "table": "recs-test"}
    storage.client.cache_clear()


@pytest.fixture
def boto(aws):
    import boto3

    return lambda service: boto3.client(service, region_name="us-east-1")

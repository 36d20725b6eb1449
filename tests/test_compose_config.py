"""The compose stack on a shared network, read statically (no Docker needed; tests/test_compose.py
brings the stack up for real): loopback-only ports, no fixed secrets, the Docker socket away
from the network-facing API server, a registry that requires credentials, and a serving container
with no worker keys on a network of its own."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def interpolate(value, env: dict[str, str]):
    """Compose's ``${VAR:-default}`` / ``${VAR-default}`` / ``${VAR}`` with ``env``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        got = env.get(name)
        if op == ":-":
            return got or default
        if op == "-":
            return default if got is None else got
        return got or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", one, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose():
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yaml").read_text()), {})


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def test_every_published_port_is_bound_to_loopback_by_default(services):
    """The Airflow API was published on all interfaces (anyone on the Wi-Fi could reach it)."""
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert set(published) >= {"airflow-apiserver", "moto", "registry"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), (name, port)
    raw = (ROOT / "docker-compose.yaml").read_text()
    assert raw.count("${RECSYS_BIND_ADDRESS:-127.0.0.1}:") == sum(map(len, published.values()))


def test_no_fixed_secret_and_no_default_password(services):
    """A fixed JWT secret and API secret key let anyone mint an admin token; airflow/airflow."""
    for name, s in services.items():
        env = s.get("environment") or {}
        assert "AIRFLOW__API_AUTH__JWT_SECRET" not in env and "AIRFLOW__API__SECRET_KEY" not in env, name
        if name.startswith("airflow-"):
            assert env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"] == "cat /run/recsys-secrets/jwt_secret"
            assert env["AIRFLOW__API__SECRET_KEY_CMD"] == "cat /run/recsys-secrets/api_secret_key"
            assert "recsys-secrets:/run/recsys-secrets:ro" in s["volumes"]
            assert s["depends_on"]["secrets-init"]["condition"] == "service_completed_successfully"
        assert env.get("_AIRFLOW_WWW_USER_PASSWORD") in (None, ""), name
    assert "/run/recsys-secrets/admin_password" in " ".join(services["airflow-apiserver"]["command"])


def test_the_docker_socket_is_mounted_into_the_scheduler_only(services):
    with_socket = sorted(name for name, s in services.items()
                         if any(str(v).endswith(":/var/run/docker.sock") for v in s.get("volumes", [])))
    assert with_socket == ["airflow-scheduler"]
    assert "group_add" not in services["airflow-apiserver"]


def _secrets_module():
    spec = importlib.util.spec_from_file_location("compose_secrets", ROOT / "deploy" / "compose" / "secrets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _htpasswd_accepts(line: str, user: str, password: str) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt", reason="the standard library's crypt checks the bcrypt hash")
    name, _, hashed = line.strip().partition(":")
    return name == user and hashed.startswith("$2") and crypt.crypt(password, hashed) == hashed


def test_secrets_are_generated_once_kept_across_starts_and_given_values_win(tmp_path, monkeypatch, capsys):
    secrets_dir, serve_dir, auth_dir = tmp_path / "secrets", tmp_path / "serve", tmp_path / "registry-auth"
    serve_dir.mkdir()
    auth_dir.mkdir()
    monkeypatch.setenv("RECSYS_SECRETS_DIR", str(secrets_dir))
    monkeypatch.setenv("RECSYS_SERVE_CREDENTIALS_DIR", str(serve_dir))
    monkeypatch.setenv("RECSYS_REGISTRY_AUTH_DIR", str(auth_dir))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWORKERKEY")  # the worker's: never copied
    for var in ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "_AIRFLOW_WWW_USER_PASSWORD", "REGISTRY_USER",
                "REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    mod = _secrets_module()
    assert mod.main() == 0
    first = {p.name: p.read_text() for p in secrets_dir.iterdir()}
    assert set(first) == {"jwt_secret", "api_secret_key", "admin_password", "registry_credentials"}
    assert len(set(first.values())) == 4 and all(len(v) >= 16 for v in first.values())
    # the registry's: a generated password, its bcrypt hash in the htpasswd the registry reads
    user, _, password = first["registry_credentials"].partition(":")
    assert user == "recsys" and len(password) >= 24
    htpasswd = (auth_dir / "htpasswd").read_text()
    assert password not in htpasswd and _htpasswd_accepts(htpasswd, "recsys", password)
    assert not _htpasswd_accepts(htpasswd, "recsys", "testing")
    assert f"password of Airflow user 'airflow': {first['admin_password']}" in capsys.readouterr().out
    assert all((secrets_dir / n).stat().st_mode & 0o777 == 0o440 for n in first)
    mod.main()  # a restart keeps them (tokens and the password survive)
    assert {p.name: p.read_text() for p in secrets_dir.iterdir()} == first
    assert _htpasswd_accepts((auth_dir / "htpasswd").read_text(), "recsys", password)  # the same password
    monkeypatch.setenv("_AIRFLOW_WWW_USER_PASSWORD", "chosen")
    monkeypatch.setenv("REGISTRY_PASSWORD", "chosen-too")
    mod.main()
    assert (secrets_dir / "admin_password").read_text() == "chosen"
    assert (secrets_dir / "registry_credentials").read_text() == "recsys:chosen-too"
    assert _htpasswd_accepts((auth_dir / "htpasswd").read_text(), "recsys", "chosen-too")
    creds = (serve_dir / "credentials").read_text()
    assert "aws_access_key_id = testing" in creds and "AKIAWORKERKEY" not in creds
    assert (serve_dir / "credentials").stat().st_mode & 0o777 == 0o400


def _recording_engine():
    """A fake Docker engine whose ``create_container`` keyword arguments are kept in ``created``."""
    from tests.test_deploy_alerts import FakeEngine

    engine = FakeEngine(None)
    created: dict = {}
    original = engine.create_container

    def create(image, **kwargs):
        created.update(kwargs)
        return original(image, **kwargs)

    engine.create_container = create
    return engine, created


def test_the_docker_deploy_gives_the_serving_container_no_worker_keys(monkeypatch):
    """RECSYS_DEPLOY=docker copied the worker's AWS keys into the serving container's environment."""
    pytest.importorskip("docker")
    from recsys import deploy
    from recsys.settings import Settings

    worker = {"AWS_ACCESS_KEY_ID": "AKIAWORKER", "AWS_SECRET_ACCESS_KEY": "s3cret", "AWS_SESSION_TOKEN": "tok",
              "AWS_PROFILE": "admin", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://moto:5000",
              "RECSYS_BUCKET": "b"}
    env = deploy.container.container_env(worker, "v9", "recs")
    assert env == {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://moto:5000", "RECSYS_BUCKET": "b",
                   "MODEL_VERSION": "v9", "RECSYS_TABLE": "recs"}
    env = deploy.container.container_env({**worker, "RECSYS_SERVE_CREDENTIALS": "recsys-serve-credentials"}, "v9",
                                         "recs")
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/run/recsys-aws/credentials" and "AWS_SECRET_ACCESS_KEY" not in env

    for k, v in worker.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RECSYS_SERVE_CREDENTIALS", "recsys-serve-credentials")
    monkeypatch.setattr(deploy.smoke, "smoke_test", lambda *a, **k: None)
    engine, created = _recording_engine()
    deploy.container.deploy_container(Settings(docker_network="recsys"), "r/recsys-serve:new", "v2", "42",
                                      client=engine)
    assert created["host_config"]["binds"] == {"recsys-serve-credentials": {"bind": "/run/recsys-aws", "mode": "ro"}}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(created["environment"])


def test_the_registry_requires_the_credentials_the_push_path_logs_in_with(services):
    """The registry had no authentication: anything on the stack's network (the serving container
    included) could push an image the next deploy would run."""
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "registry.yml").read_text())
    assert config["auth"] == {"htpasswd": {"realm": "recsys-registry", "path": "/auth/htpasswd"}}
    registry = services["registry"]
    assert "registry-auth:/auth:ro" in registry["volumes"]
    assert registry["depends_on"]["secrets-init"]["condition"] == "service_completed_successfully"
    assert "registry-auth:/run/recsys-registry-auth" in services["secrets-init"]["volumes"]
    for name in ("airflow-scheduler", "ecr-sync"):  # the push path; the listener reading manifests
        env = services[name]["environment"]
        assert env["RECSYS_REGISTRY_CREDENTIALS"] == "/run/recsys-secrets/registry_credentials"
        assert "recsys-secrets:/run/recsys-secrets:ro" in services[name]["volumes"]


def test_the_serving_container_has_a_network_of_its_own(compose, services):
    """The serving container shared one network with the registry, the API server and the
    database; now only with moto (its AWS) and the scheduler that smoke-tests it."""
    serve_net = compose["networks"]["serve"]["name"]
    assert serve_net != compose["networks"]["default"]["name"]
    on_serve = sorted(name for name, s in services.items() if "serve" in (s.get("networks") or []))
    assert on_serve == ["airflow-scheduler", "moto"]
    for name in on_serve:
        assert "default" in services[name]["networks"]
    assert services["airflow-scheduler"]["environment"]["RECSYS_SERVE_NETWORK"] == serve_net


def test_login_and_pull_use_the_registry_credentials_and_the_serving_network(tmp_path, monkeypatch):
    """The push path logs in with RECSYS_REGISTRY_CREDENTIALS through `docker login` (as with ECR's
    token); the deploy pulls with them and starts the container on RECSYS_SERVE_NETWORK."""
    pytest.importorskip("docker")
    from recsys import deploy
    from recsys.settings import Settings

    calls = tmp_path / "calls"
    cli = tmp_path / "docker"
    cli.write_text(f'#!/bin/sh\necho "$@" >> {calls}\ncat >> {calls}\necho >> {calls}\n')
    cli.chmod(0o755)
    creds = tmp_path / "registry_credentials"
    creds.write_text("recsys:s3cret-pass\n")

    class NoEcr:
        def get_authorization_token(self):
            raise AssertionError("the compose registry's credentials are given: no ECR token")

    settings = Settings(docker_cli=str(cli), registry="127.0.0.1:5001", registry_credentials=str(creds),
                        docker_network="recsys", serve_network="recsys-serve")
    deploy.image.login(NoEcr(), settings)
    assert calls.read_text().splitlines() == ["login --username recsys --password-stdin 127.0.0.1:5001", "s3cret-pass"]

    class Ecr:
        def get_authorization_token(self):
            import base64

            return {"authorizationData": [{"authorizationToken": base64.b64encode(b"AWS:tok").decode(),
                                           "proxyEndpoint": "https://1.dkr.ecr.us-east-1.amazonaws.com"}]}

    calls.unlink()
    deploy.image.login(Ecr(), Settings(docker_cli=str(cli)))  # no credentials file: ECR's token, as before
    assert calls.read_text().splitlines() == [
        "login --username AWS --password-stdin https://1.dkr.ecr.us-east-1.amazonaws.com", "tok"]

    monkeypatch.setattr(deploy.smoke, "smoke_test", lambda *a, **k: None)
    engine, created = _recording_engine()
    deploy.container.deploy_container(settings, "127.0.0.1:5001/recsys-serve:new", "v2", "42", client=engine)
    assert engine.pull_auth == {"username": "recsys", "password": "s3cret-pass"}
    assert created["host_config"]["network_mode"] == "recsys-serve"
    creds.write_text("no separator\n")
    with pytest.raises(RuntimeError, match="expected one line user:password"):
        deploy.image.login(NoEcr(), settings)

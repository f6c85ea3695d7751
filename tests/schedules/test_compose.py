"""compose.yaml deploys the whole platform: no Docker engine here, so its structure is checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from nightowl.cli import cli
from nightowl.common.config import Settings

ROOT = Path(__file__).resolve().parents[2]
NIGHTOWL_SERVICES = ("migrate", "api", "worker-cpu", "worker-gpu", "worker-train", "beat")
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, with every variable unset."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


def test_services_healthchecks_and_start_order(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert set(services) >= {"redis", "postgres", "migrate", "api", "worker-cpu", "worker-gpu",
                             "worker-train", "beat", "flower"}
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    for name in ("redis", "postgres", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["nightowl", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in NIGHTOWL_SERVICES[1:]:
        deps = services[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}, name
        assert deps["postgres"] == {"condition": "service_healthy"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name
    assert services["flower"]["profiles"] == ["monitoring"]
    assert "flower" not in [p for s in NIGHTOWL_SERVICES for p in services[s].get("profiles", [])]


def test_one_environment_for_every_nightowl_process(compose: dict[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert "x-nightowl-env: &nightowl-env" in text
    envs = [_services(compose)[name]["environment"] for name in NIGHTOWL_SERVICES]
    shared = compose["x-nightowl-env"]
    for env in envs:
        assert {k: env[k] for k in shared} == shared
    # The values are settings nightowl accepts, and they name the compose services.
    from nightowl.common.config import load_settings

    for key, value in shared.items():
        monkeypatch.setenv(key, _interpolate(str(value)))
    settings = load_settings()
    assert settings.sqlalchemy_url.startswith("postgresql+psycopg://nightowl:nightowl@postgres:")
    assert settings.broker_url == "redis://redis:6379/0"


def test_gpu_worker_is_one_solo_process_per_reserved_gpu(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    # `settings`: the worker command creates its home; it must be the tests' own.
    gpu = _services(compose)["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert _services(compose)["api"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    argv = _worker_argv(gpu["command"], monkeypatch)
    assert argv[argv.index("-P") + 1] == "solo" and argv[argv.index("-c") + 1] == "1"
    assert argv[argv.index("-Q") + 1] == "gpu"
    train = _worker_argv(_services(compose)["worker-train"]["command"], monkeypatch)
    assert train[train.index("-Q") + 1] == "train" and train[train.index("-c") + 1] == "1"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in dockerfile and "whl/${TORCH_VARIANT}" in dockerfile


def _worker_argv(command: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The celery command line `nightowl worker ...` would exec, captured instead of run."""
    from nightowl.cli import services

    captured: list[str] = []

    def fake_execve(_path: str, argv: list[str], _env: dict[str, str]) -> None:
        captured.extend(argv)
        raise SystemExit(0)

    monkeypatch.setattr(services.os, "execve", fake_execve)
    result = CliRunner().invoke(cli, command[1:])
    assert result.exit_code == 0, result.output
    return captured


def test_exactly_one_beat(compose: dict[str, Any]) -> None:
    beats = [name for name, svc in _services(compose).items()
             if svc.get("command", [])[:2] == ["nightowl", "beat"]
             or "--beat" in svc.get("command", [])]
    assert beats == ["beat"]
    assert _services(compose)["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_every_nightowl_command_exists(compose: dict[str, Any]) -> None:
    commands = [svc["command"] for svc in _services(compose).values()
                if svc.get("command", [None])[0] == "nightowl"]
    assert len(commands) == len(NIGHTOWL_SERVICES)
    for command in commands:
        # --help last: click still rejects an unknown subcommand or option before it.
        result = CliRunner().invoke(cli, [*command[1:], "--help"])
        assert result.exit_code == 0, (command, result.output)
        path = []
        for word in command[1:]:
            if word.startswith("-"):
                break
            path.append(word)
        assert f"{' '.join(path)} [OPTIONS]" in result.output, (command, result.output)
    bad = CliRunner().invoke(cli, ["worker", "--no-such-option", "--help"])
    assert bad.exit_code != 0, "the check above could not fail"


def test_hosts_share_no_volume_only_the_artifact_store(compose: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    services = _services(compose)
    for name in NIGHTOWL_SERVICES:
        assert not services[name].get("volumes"), f"{name} mounts a volume"
    for name in NIGHTOWL_SERVICES[1:]:
        assert services[name]["depends_on"]["minio-bucket"] == {
            "condition": "service_completed_successfully"}, name
    assert services["minio"]["healthcheck"]["test"]
    from nightowl.common.config import load_settings
    from nightowl.storage.artifacts import S3Store, get_store

    for key, value in compose["x-nightowl-env"].items():
        monkeypatch.setenv(key, _interpolate(str(value)))
    store = get_store(load_settings())
    assert isinstance(store, S3Store) and store.endpoint_url == "http://minio:9000"
    # The bucket the one-shot creates is the one the artifact URL names.
    assert f"store/{store.bucket}" in " ".join(services["minio-bucket"]["entrypoint"])

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nightowl.common.config import EMBEDDED, Settings, load_settings
from nightowl.common.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other tests' session fixtures export NIGHTOWL_*; these tests read the environment afresh.
    for var in [v for v in os.environ if v.startswith("NIGHTOWL_")]:
        monkeypatch.delenv(var)


def test_defaults_live_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'nightowl.db'}"
    assert s.redis_url == EMBEDDED
    assert s.broker_url == f"redis+socket://{tmp_path / 'valkey.sock'}"
    assert s.models_path == tmp_path / "models"
    assert s.artifacts_path == tmp_path / "artifacts"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NIGHTOWL_HOME", str(tmp_path))
    monkeypatch.setenv("NIGHTOWL_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("NIGHTOWL_CHUNK_SIZE", "17")
    monkeypatch.setenv("NIGHTOWL_MODEL_ROOTS", "/srv/models:/data/ckpt")
    s = load_settings()
    assert s.broker_url == "redis://127.0.0.1:6379/3"
    assert s.chunk_size == 17
    assert s.model_roots == [Path("/srv/models"), Path("/data/ckpt")]


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("NIGHTOWL_REDIS_URL", "localhost:6379", "is not a Redis URL"),
        ("NIGHTOWL_DATABASE_URL", "not a url", "is not a database URL"),
        ("NIGHTOWL_CHUNK_SIZE", "0", "chunk_size"),
    ],
)
def test_malformed_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://u:pw@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
    ("postgresql+psycopg://u@db/x?password=sekret&sslmode=require",
     "postgresql+psycopg://u@db/x?password=***&sslmode=require"),
    ("redis://cache:6379/0?password=sekret", "redis://cache:6379/0?password=***"),
    ("redis://:sekret@cache/0", "redis://:***@cache/0"),
    ("sqlite:////srv/nightowl.db", "sqlite:////srv/nightowl.db"),
])
def test_urls_are_printed_without_their_passwords(url: str, shown: str) -> None:
    # What `nightowl up` prints for its database and broker.
    from nightowl.common.config import redact_url

    assert redact_url(url) == shown
    assert "sekret" not in redact_url(url) and ":pw@" not in redact_url(url)

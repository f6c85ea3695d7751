"""The operator's key: `up` shows the same key every start (kept 0600 in the home), keys
expire, what the CLI submits is visible under the operator's key, and private files are 0600."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from fastapi.testclient import TestClient

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform import auth
from nightowl.platform.db import session_scope
from nightowl.platform.orm import utcnow
from nightowl_api.main import app


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_operator_key_is_reused_across_starts_and_replaced_when_revoked(
        migrated: Settings, tmp_path: Path) -> None:
    home = tmp_path / "opkey"
    with session_scope(migrated) as s:
        first = auth.operator_key(s, home)
    with session_scope(migrated) as s:
        assert auth.operator_key(s, home) == first
    assert _mode(home / auth.OPERATOR_KEY_FILE) == 0o600 and _mode(home) == 0o700
    revoked = CliRunner().invoke(cli, ["keys", "revoke", first[:auth.PREFIX_CHARS]])
    assert revoked.exit_code == 0, revoked.output
    with session_scope(migrated) as s:
        second = auth.operator_key(s, home)
    assert second != first
    with TestClient(app) as c:
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {first}"}).status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_cli_work_shows_under_the_operators_key(migrated: Settings, tmp_path: Path,
                                                fake_models: Settings) -> None:
    items = tmp_path / "in.jsonl"
    items.write_text(json.dumps({"custom_id": "a", "text": "hello"}) + "\n")
    submitted = CliRunner().invoke(cli, ["submit", "generate", str(items), "--model",
                                         "apitest-gen", "--queue", "gpu"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[-1]
    with session_scope(migrated) as s:
        key = auth.operator_key(s, tmp_path / "home")
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get(f"/v1/jobs/{job_id}").status_code == 200
        assert job_id in c.get("/v1/jobs").text


def test_keys_expire(migrated: Settings, cli_runner: CliRunner) -> None:
    made = cli_runner.invoke(cli, ["keys", "create", "expiring", "--expires-in", "1h"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    listed = cli_runner.invoke(cli, ["keys", "list", "--tenant", "expiring"])
    assert "expires" in listed.output
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get("/v1/jobs").status_code == 200
        with session_scope(migrated) as s:
            row = auth.list_keys(s, tenant_name="expiring")[-1][0]
            row.expires_at = utcnow() - timedelta(seconds=1)
        refused = c.get("/v1/jobs")
        assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
        assert key not in refused.text
    for bad in (["--expires-in", "soon"], ["--expires-at", "2020-01-01T00:00Z"],
                ["--expires-at", "2030-01-01T00:00"], ["--expires-in", "1h", "--expires-at",
                                                       "2030-01-01T00:00Z"]):
        out = cli_runner.invoke(cli, ["keys", "create", "expiring", *bad])
        assert out.exit_code == 2 or out.exit_code == 1, out.output
        assert ("Traceback" not in out.output and out.exception is None) or \
            isinstance(out.exception, SystemExit)


def test_database_and_uploads_are_private(migrated: Settings, tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h", database_url=f"sqlite:///{tmp_path / 'h' / 'n.db'}")
    from nightowl.platform import migrate
    from nightowl.platform.db import dispose_engines

    migrate.upgrade(s)
    assert _mode(s.home) == 0o700 and _mode(tmp_path / "h" / "n.db") == 0o600
    with session_scope(s) as session:
        import io

        from nightowl.storage.files import create_file

        row = create_file(session, s, stream=io.BytesIO(b"x"), filename="f", purpose="batch")
        assert _mode(Path(row.path)) == 0o600 and _mode(Path(row.path).parent) == 0o700
    dispose_engines()

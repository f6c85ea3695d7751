"""Limits on what a tenant holds beyond queued jobs: its fine-tunes count as running work, and
the bytes kept for it (files, fine-tune data, versions) stop at its max_stored_bytes, with a
429 that gives the numbers and nothing stored."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from helpers import count_rows
from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform.orm import File, TrainingRun
from nightowl_api.main import app

TRAIN = "\n".join(json.dumps({"text": f"review {i}", "label": "pos" if i % 2 else "neg"})
                  for i in range(20)) + "\n"


def _quota(tenant: str, *args: str) -> None:
    result = CliRunner().invoke(cli, ["quota", "set", tenant, *args])
    assert result.exit_code == 0, result.output


def _upload(client: TestClient, data: str | bytes, purpose: str = "fine-tune") -> Any:
    return client.post("/v1/files", files={"file": ("t.jsonl", data)},
                       data={"purpose": purpose})


def _finetune(client: TestClient, file_id: str) -> Any:
    return client.post("/v1/finetunes", json={"kind": "sentiment", "base": "tiny-sentiment",
                                              "training_file": file_id})


def test_fine_tunes_count_against_max_running_jobs(
        models: Settings, make_api_key: Callable[[str], str], session: Session) -> None:
    tenant = f"runs-{uuid.uuid4().hex[:6]}"
    key = make_api_key(tenant)
    _quota(tenant, "--max-running-jobs", "2")
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        file_id = _upload(client, TRAIN).json()["id"]
        runs = [_finetune(client, file_id) for _ in range(2)]
        assert [r.status_code for r in runs] == [201, 201]
        before = count_rows(session, TrainingRun)
        third = _finetune(client, file_id)
        assert third.status_code == 429, third.text
        assert third.json()["error"]["code"] == "max_running_jobs"
        assert "2 unfinished jobs and fine-tunes" in third.json()["error"]["message"]
        assert count_rows(session, TrainingRun) == before
        # A finished (here cancelled) run frees its place.
        for r in runs:  # nor would a later test's train worker spend minutes on these
            assert client.post(f"/v1/finetunes/{r.json()['id']}/cancel").status_code == 200
        again = _finetune(client, file_id)
        assert again.status_code == 201, again.text
        client.post(f"/v1/finetunes/{again.json()['id']}/cancel")


def test_stored_bytes_stop_uploads_and_fine_tune_data_with_the_numbers(
        models: Settings, make_api_key: Callable[[str], str], session: Session) -> None:
    tenant = f"bytes-{uuid.uuid4().hex[:6]}"
    key = make_api_key(tenant)
    _quota(tenant, "--max-stored-bytes", str(len(TRAIN) * 2 - 10))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        file_id = _upload(client, TRAIN).json()["id"]
        files = count_rows(session, File)
        big = _upload(client, b"x" * (len(TRAIN) * 2))
        assert big.status_code == 429, big.text
        error = big.json()["error"]
        assert error["code"] == "max_stored_bytes"
        assert f"stores {len(TRAIN):,} bytes" in error["message"]
        assert f"quota of {len(TRAIN) * 2 - 10:,}" in error["message"]
        assert count_rows(session, File) == files
        # The run's own copy of the data (train + eval split) is over what is left.
        runs = count_rows(session, TrainingRun)
        over = _finetune(client, file_id)
        assert over.status_code == 429, over.text
        assert over.json()["error"]["code"] == "max_stored_bytes"
        assert count_rows(session, TrainingRun) == runs
        # Deleting frees the room.
        assert client.delete(f"/v1/files/{file_id}").status_code == 200
        assert _upload(client, TRAIN).status_code == 200
    shown = CliRunner().invoke(cli, ["quota", "show", tenant])
    assert f"{len(TRAIN):,}" in shown.output, shown.output


def test_a_fine_tunes_data_is_private_to_the_server_user(
        models: Settings, client: TestClient) -> None:
    run = _finetune(client, _upload(client, TRAIN).json()["id"])
    assert run.status_code == 201, run.text
    folder = models.artifacts_path / "runs" / run.json()["id"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    for name in ("train.jsonl", "eval.jsonl"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    client.post(f"/v1/finetunes/{run.json()['id']}/cancel")

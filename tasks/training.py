"""run_finetune: a fine-tune under a SQL lease with a heartbeat, resumable from its checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.common.enums import RunStatus, TaskName
from nightowl.finetune import data as finetune_data
from nightowl.finetune import service as finetunes
from nightowl.platform.db import session_factory
from nightowl.platform.orm import ModelVersion, TrainingRun
from nightowl.storage import run_artifacts
from nightowl.storage.artifacts import shareable_source
from nightowl.storage.cache import local_dir
from nightowl_tasks.app import app, lease_owner, worker_name
from nightowl_tasks.retry import with_db_retry
from nightowl_workers.device import configure_threads
from nightowl_workers.training import TrainConfig, evaluate, train

log = logging.getLogger(__name__)
HEARTBEAT_EVERY_S = 5.0


# Acked on receipt: a run outlives Redis' visibility timeout, so redelivery must not be what
# recovers it. The SQL lease is: when it lapses, the reaper sends the run again and it resumes.
@app.task(name=TaskName.RUN_FINETUNE.value, acks_late=False)
def run_finetune(run_id: str) -> dict[str, Any]:
    settings = get_settings()
    configure_threads(settings.torch_threads)
    owner = lease_owner()
    with session_factory(settings)() as session:
        run = with_db_retry(
            lambda: finetunes.claim_run(session, run_id, owner=owner,
                                        lease_seconds=settings.lease_seconds),
            session=session,
        )
        if run is None:
            return {"run_id": run_id, "skipped": True}
        try:
            return _train(session, settings, run, owner)
        except Exception as e:
            session.rollback()
            log.exception("fine-tune %s failed", run_id)
            message = f"{type(e).__name__}: {e}"
            with_db_retry(lambda: finetunes.fail_run(session, run_id, message), session=session)
            return {"run_id": run_id, "failed": message}


def _train(session: Session, settings: Settings, run: TrainingRun, owner: str) -> dict[str, Any]:
    base = session.get(ModelVersion, run.base_version_id)
    assert base is not None
    folder = finetunes.run_dir(settings, run.id)
    # Another host may have submitted or started this run: its files come from the store.
    run_artifacts.pull_inputs(settings, run.id, folder)
    pulled = run_artifacts.pull_latest_checkpoint(settings, run.id, folder)
    if pulled is not None:
        finetunes.add_event(session, run.id, "checkpoint_pulled",
                            {"step": pulled, "host": worker_name().split("@")[0].split(":")[0]})
        with_db_retry(session.commit, session=session)
    train_rows = finetune_data.load_rows(folder / "train.jsonl")
    eval_rows = finetune_data.load_rows(folder / "eval.jsonl")
    config = TrainConfig(
        kind=run.kind, base_source=local_dir(base.source, base.sha256, settings),
        output_dir=folder,
        labels=run.dataset.get("labels"), device=settings.device,
        **{k: v for k, v in run.hyperparams.items() if v is not None},
    )
    beat = _Heartbeat(session, settings, run.id, owner)

    def on_event(kind: str, details: dict[str, Any]) -> None:
        if kind == "checkpoint":
            run_artifacts.push_checkpoint(settings, run.id, Path(details["path"]))
        finetunes.add_event(session, run.id, kind, details)
        with_db_retry(session.commit, session=session)

    def on_metrics(step: int, values: dict[str, float]) -> None:
        with_db_retry(lambda: finetunes.record_metrics(session, run.id, step, values),
                      session=session)

    result = train(config, train_rows, eval_rows, on_metrics=on_metrics, on_event=on_event,
                   should_stop=beat.cancelled, heartbeat=beat)
    if result.stopped:
        finetunes.mark_cancelled(session, run.id, result.steps)
        return {"run_id": run.id, "cancelled_at_step": result.steps}
    incumbent = finetunes.incumbent_for(session, run)
    incumbent_metrics = None
    if incumbent is not None:
        # The gate compares both models on this run's eval set, never on stale numbers.
        incumbent_metrics = evaluate(run.kind,
                                     local_dir(incumbent.source, incumbent.sha256, settings),
                                     eval_rows,
                                     device=settings.device, max_length=config.max_length)
    model_path, sha256 = shareable_source(settings, str(result.model_path))
    version = finetunes.finish_run(
        session, run.id, model_path=model_path, sha256=sha256 or result.sha256,
        metrics=result.final_metrics, incumbent_metrics=incumbent_metrics,
    )
    return {"run_id": run.id, "version": version.ref, "steps": result.steps}


class _Heartbeat:
    """Called every step: renews the lease at most every few seconds and notices a cancel."""

    def __init__(self, session: Session, settings: Settings, run_id: str, owner: str) -> None:
        self.session, self.settings, self.run_id, self.owner = session, settings, run_id, owner
        self.last = 0.0
        self.status = RunStatus.RUNNING

    def __call__(self) -> None:
        # Renew well inside the lease, however short it is configured: a lease that lapses
        # between two heartbeats lets the reaper hand a live run to a second worker.
        if time.monotonic() - self.last < min(HEARTBEAT_EVERY_S,
                                              self.settings.lease_seconds / 3):
            return
        self.last = time.monotonic()
        self.status = with_db_retry(
            lambda: finetunes.heartbeat(self.session, self.run_id, owner=self.owner,
                                        lease_seconds=self.settings.lease_seconds),
            session=self.session,
        )

    def cancelled(self) -> bool:
        return self.status == RunStatus.CANCELLING

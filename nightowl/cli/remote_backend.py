"""The CLI through the HTTP API (`nightowl --api URL --key KEY ...`), as the key's tenant.

Answers are read into the core's view models, the ones the local backend gives, so a command
prints the same either way; what the API does not show (registry paths) is left empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from nightowl.cli.api_client import ApiClient
from nightowl.cli.backend import (
    Row,
    jsonl_bytes,
    open_input,
)

if TYPE_CHECKING:
    from nightowl.common.specs import FinetuneRequest
    from nightowl.finetune.views import EventView, MetricView, RunView
    from nightowl.fleet.views import WorkerView
    from nightowl.jobs.service import JobSpec
    from nightowl.jobs.views import JobView, Submitted
    from nightowl.query.query import ResultFilter
    from nightowl.registry.views import VersionView
    from nightowl.scheduling.views import FiringView, ScheduleEdit, ScheduleView

class RemoteBackend:
    def __init__(self, url: str, key: str | None) -> None:
        self.api = ApiClient(url, key)

    def require_local(self, command: str, why: str) -> None:
        raise click.ClickException(
            f"`{command}` {why}, so it does not run through the API at {self.api.url}. Run it "
            "without --api (and with NIGHTOWL_API_URL unset) on a host set up for the "
            "database.")

    # -- jobs and results -----------------------------------------------------------------
    def submit_job(self, *, spec: JobSpec, file: str, fmt: str | None, column: str | None,
                   id_column: str | None) -> Submitted:
        from nightowl.jobs.views import Submitted

        # The spec's values were checked when it was built, before its file is read and
        # uploaded, by the server's rules.
        body = spec.request()
        body.update(input_format=fmt, column=column, id_column=id_column)
        stream, name = open_input(file)
        with stream:
            body["file_id"] = self.api.upload(stream=stream, filename=name, purpose="jobs")
        return Submitted.model_validate(self.api.post("/v1/jobs", body))

    def list_jobs(self, *, status: str | None, limit: int) -> list[JobView]:
        from nightowl.jobs.views import JobView

        return [JobView.model_validate(j) for j in
                self.api.get("/v1/jobs", status=status, limit=limit)["data"]]

    def get_job(self, job_id: str) -> JobView:
        from nightowl.jobs.views import JobView

        return JobView.model_validate(self.api.get(f"/v1/jobs/{job_id}"))

    def watch_job(self, job_id: str, *, timeout: float | None = None) -> JobView:
        from nightowl.cli.watch import follow, summary

        def health() -> str | None:
            warning: str | None = self.api.get(f"/v1/jobs/{job_id}/health")["warning"]
            return warning

        final = follow(job_id, lambda: self.get_job(job_id), health, interval=1.0,
                       timeout=timeout)
        summary(final)
        return final

    def cancel_job(self, job_id: str) -> JobView:
        from nightowl.jobs.views import JobView

        return JobView.model_validate(self.api.post(f"/v1/jobs/{job_id}/cancel"))

    def retry_job(self, job_id: str) -> JobView:
        from nightowl.jobs.views import JobView

        return JobView.model_validate(self.api.post(f"/v1/jobs/{job_id}/retry"))

    def job_stats(self, job_id: str) -> dict[str, Any]:
        stats: dict[str, Any] = self.api.get(f"/v1/jobs/{job_id}/stats")
        return stats

    @contextmanager
    def job_rows(self, job_id: str, *, errors: bool) -> Iterator[tuple[str, Iterator[Row]]]:
        kind = self.get_job(job_id).kind.value
        rows = self.api.jsonl(f"/v1/jobs/{job_id}/results", format="jsonl",
                              errors=str(errors).lower())
        yield kind, enumerate(rows)

    def query_results(self, f: ResultFilter, *, limit: int | None) -> Iterator[dict[str, Any]]:
        # The command stops reading at its limit; the stream closes with the generator.
        yield from self.api.jsonl(
            "/v1/results", job=f.job_id, kind=f.kind.value if f.kind else None, model=f.model,
            status=f.status.value if f.status else None, label=f.label, contains=f.contains,
            format="jsonl",
            # Sent with their offset: the CLI reads times in the user's zone, the API in UTC.
            since=f.since.isoformat() if f.since else None,
            until=f.until.isoformat() if f.until else None)

    # -- models ---------------------------------------------------------------------------
    def list_versions(self, name: str | None) -> list[VersionView]:
        """/v1/models lists names, NAME@ALIAS and pinned NAME@vN: the pinned ones are the
        versions, and the alias entries say which version each alias holds. Where the weights
        are and their checksum are the operator's: the API does not show them."""
        from nightowl.openai.model_list import OWNER  # how /v1/models names the shared models
        from nightowl.registry.views import SHARED, AliasView, VersionView

        models: list[dict[str, Any]] = self.api.get("/v1/models")["data"]
        aliases: dict[str, list[AliasView]] = {}
        for m in models:
            if "@" in m["id"] and m["id"] != m["version"]:
                # /v1/models lists the aliases this tenant's submits resolve to, and no other.
                aliases.setdefault(m["version"], []).append(AliasView(
                    alias=m["id"].split("@", 1)[1], here=True,
                    owner=SHARED if m["owned_by"] == OWNER else m["owned_by"]))
        return [VersionView(
            ref=m["id"], kind=m["kind"], aliases=aliases.get(m["id"], []),
            owner=SHARED if m["owned_by"] == OWNER else m["owned_by"],
            created_at=datetime.fromtimestamp(m["created"], UTC),
            metrics=m.get("metrics") or {}, base_version=m.get("base_version"),
            training_run_id=m.get("training_run_id"),
        ) for m in models if m["id"] == m["version"]
            and (name is None or m["id"].split("@")[0] == name)]

    def compare_models(self, a: str, b: str) -> dict[str, Any]:
        out: dict[str, Any] = self.api.get("/v1/models/compare", a=a, b=b)
        return out

    # -- fine-tunes -----------------------------------------------------------------------
    def _upload_training(self, path: Path, kind: str, what: str) -> str:
        if not path.is_file():
            raise click.ClickException(f"{what} {str(path)!r} does not exist")
        stream: IO[bytes]
        if kind == "generate" and path.suffix.lower() == ".txt":
            # The server reads uploads as JSONL: send plain text as the rows it stands for.
            from nightowl.common.enums import TaskKind
            from nightowl.finetune import data as finetune_data

            stream = jsonl_bytes(finetune_data.read_rows(path, TaskKind.GENERATE, what=what))
        else:
            stream = path.open("rb")
        with stream:
            return self.api.upload(stream=stream, filename=path.name, purpose="fine-tune")

    def submit_finetune(self, request: FinetuneRequest, *, train_file: Path,
                        eval_file: Path | None) -> RunView:
        from nightowl.common.specs import check_hyperparams

        body = request.model_dump(mode="json")
        # The request's values were checked when it was built and its hyperparameters are
        # checked now, before any file is uploaded; the operator's training-budget bounds are
        # the server's to check.
        check_hyperparams(request.hyperparameters, None)
        train = self._upload_training(train_file, request.kind, "training file")
        val = (self._upload_training(eval_file, request.kind, "eval file")
               if eval_file else None)
        from nightowl.finetune.views import RunView

        return RunView.model_validate(self.api.post(
            "/v1/finetunes", {**body, "training_file": train, "validation_file": val}))

    def run_progress(self, run_id: str) -> tuple[str, tuple[int, float] | None]:
        status: str = self.api.get(f"/v1/finetunes/{run_id}")["status"]
        loss = self.api.get(f"/v1/finetunes/{run_id}/metrics", key="train/loss")
        return status, (loss[-1]["step"], loss[-1]["value"]) if loss else None

    def run_outcome_line(self, run_id: str) -> str:
        from nightowl.registry.outcome import run_line

        run = self.get_run(run_id)
        # The last value of each eval metric: what the registered version was judged by.
        metrics = {m.key: m.value for m in self.run_metrics(run_id)}
        return run_line(run_id=run.id, status=run.status.value, error=run.error,
                        result_version=run.result_version,
                        promotion_summary=run.promotion_summary, metrics=metrics)

    def list_runs(self, limit: int) -> list[RunView]:
        from nightowl.finetune.views import RunView

        return [RunView.model_validate(r) for r in self.api.get("/v1/finetunes", limit=limit)]

    def get_run(self, run_id: str) -> RunView:
        from nightowl.finetune.views import RunView

        return RunView.model_validate(self.api.get(f"/v1/finetunes/{run_id}"))

    def run_events(self, run_id: str) -> list[EventView]:
        from nightowl.finetune.views import EventView

        return [EventView.model_validate(e)
                for e in self.api.get(f"/v1/finetunes/{run_id}/events")]

    def cancel_run(self, run_id: str) -> RunView:
        from nightowl.finetune.views import RunView

        return RunView.model_validate(self.api.post(f"/v1/finetunes/{run_id}/cancel"))

    def run_metrics(self, run_id: str) -> list[MetricView]:
        from nightowl.finetune.views import MetricView

        return [MetricView.model_validate(m)
                for m in self.api.get(f"/v1/finetunes/{run_id}/metrics")]

    # -- schedules ------------------------------------------------------------------------
    def _upload_spec_files(self, target: str | None,
                           spec: dict[str, Any] | None) -> dict[str, Any] | None:
        """The API names files by upload id, never by server path: upload what the spec names
        on this host and put the ids in its place."""
        if spec is None:
            return None
        spec = dict(spec)
        if target == "job" and isinstance(spec.get("input_file"), str):
            path = Path(spec.pop("input_file"))
            stream, name = open_input(str(path))
            with stream:
                spec["input_file_id"] = self.api.upload(stream=stream, filename=name,
                                                        purpose="jobs")
        if target == "finetune":
            from nightowl.common.enums import KIND_ALIASES

            kind = KIND_ALIASES.get(str(spec.get("kind")), "")
            for part, what in (("train", "training file"), ("eval", "eval file")):
                ref = spec.get(part)
                if isinstance(ref, dict) and isinstance(ref.get("file"), str):
                    ref = dict(ref)
                    ref["file_id"] = self._upload_training(Path(ref.pop("file")), kind, what)
                    spec[part] = ref
        return spec

    def add_schedule(self, name: str, change: ScheduleEdit) -> ScheduleView:
        body = {"name": name, "cron": change.cron, "timezone": change.timezone or "UTC",
                "target": change.target,
                "spec": self._upload_spec_files(change.target, change.spec),
                "catchup": change.catchup or "once", "enabled": change.enabled is not False}
        return self._schedule(self.api.post("/v1/schedules", body))

    def edit_schedule(self, name: str, change: ScheduleEdit) -> ScheduleView:
        body = {"cron": change.cron, "timezone": change.timezone, "target": change.target,
                "spec": self._upload_spec_files(change.target, change.spec),
                "catchup": change.catchup}
        return self._schedule(self.api.call("PATCH", f"/v1/schedules/{name}", json={
            k: v for k, v in body.items() if v is not None}))

    @staticmethod
    def _schedule(body: Any) -> ScheduleView:
        from nightowl.scheduling.views import ScheduleView

        return ScheduleView.model_validate(body)

    def list_schedules(self) -> list[ScheduleView]:
        return [self._schedule(s) for s in self.api.get("/v1/schedules")]

    def get_schedule(self, name: str) -> ScheduleView:
        return self._schedule(self.api.get(f"/v1/schedules/{name}"))

    def set_schedule_enabled(self, name: str, enabled: bool) -> ScheduleView:
        return self._schedule(self.api.post(
            f"/v1/schedules/{name}/{'resume' if enabled else 'pause'}"))

    def remove_schedule(self, name: str) -> None:
        self.api.call("DELETE", f"/v1/schedules/{name}")

    def run_schedule(self, name: str) -> FiringView:
        from nightowl.scheduling.views import FiringView

        return FiringView.model_validate(self.api.post(f"/v1/schedules/{name}/run"))

    def schedule_history(self, name: str, limit: int) -> tuple[str, list[FiringView]]:
        from nightowl.scheduling.views import FiringView

        tz = self.get_schedule(name).timezone
        return tz, [FiringView.model_validate(f) for f in
                    self.api.get(f"/v1/schedules/{name}/history", limit=limit)]

    # -- the fleet ------------------------------------------------------------------------
    def list_workers(self) -> list[WorkerView]:
        from nightowl.fleet.views import WorkerView

        return [WorkerView.model_validate(w) for w in self.api.get("/v1/workers")]

"""The CLI through the HTTP API (`nightowl --api URL --key KEY ...`), as a tenant.

Without --api the CLI works on the database directly, as the operator who sees every tenant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

API_URL, API_KEY = "nightowl.api_url", "nightowl.api_key"


def set_target(ctx: click.Context, url: str | None, key: str | None) -> None:
    """Called by the root group with its --api / --key options."""
    ctx.meta[API_URL], ctx.meta[API_KEY] = url, key


def client() -> Remote | None:
    """The API client when the root group was given --api (or NIGHTOWL_API_URL), else None."""
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(API_URL) if ctx is not None else None
    if not url:
        return None
    key = ctx.meta.get(API_KEY) if ctx is not None else None
    if not key:
        raise click.UsageError("--api needs --key KEY (or NIGHTOWL_API_KEY); create one with "
                               "`nightowl keys create TENANT` on the server")
    return Remote(url, key)


class Remote:
    def __init__(self, url: str, key: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(60.0, connect=10.0),
                                 headers={"Authorization": f"Bearer {key}"})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise click.ClickException(f"cannot reach the nightowl API at {self.url}: {e}") from e
        self._check(response)
        return response.json()

    @staticmethod
    def _check(response: Any) -> None:
        if response.status_code < 400:
            return
        try:
            error = response.json().get("error") or {}
        except ValueError:
            error = {"message": response.text[:500]}
        lines = [f"{response.status_code}: {error.get('message', 'request failed')}"]
        lines += [f"  {p['where']}: {p['message']}" for p in (error.get("problems") or [])[:50]
                  if isinstance(p, dict) and "where" in p]
        raise click.ClickException("\n".join(lines))

    def submit(self, *, kind: str, stream: IO[bytes], filename: str,
               body: dict[str, Any]) -> dict[str, Any]:
        uploaded = self._call("POST", "/v1/files", data={"purpose": "jobs"},
                              files={"file": (filename, stream, "application/jsonl")})
        job: dict[str, Any] = self._call("POST", "/v1/jobs",
                                         json={**body, "kind": kind, "file_id": uploaded["id"]})
        return job

    def jobs(self, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        data: list[dict[str, Any]] = self._call("GET", "/v1/jobs", params=params)["data"]
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}")
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/cancel")
        return job

    def retry(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/retry")
        return job

    def rows(self, job_id: str, *, errors: bool) -> Iterator[tuple[int, dict[str, Any]]]:
        """The job's result rows, streamed as JSONL from the API."""
        params = {"format": "jsonl", "errors": str(errors).lower()}
        with self.http.stream("GET", f"/v1/jobs/{job_id}/results", params=params) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            for n, line in enumerate(response.iter_lines()):
                if line.strip():
                    yield n, json.loads(line)

    def watch(self, job_id: str, *, timeout: float | None = None,
              interval: float = 1.0) -> dict[str, Any]:
        """The same bar, lines, stall warning and Ctrl-C as watching from SQL."""
        from nightowl.cli.watch import follow, summary

        def health() -> str | None:
            warning: str | None = self._call("GET", f"/v1/jobs/{job_id}/health")["warning"]
            return warning

        final = follow(job_id, lambda: self.job(job_id), health, interval=interval,
                       timeout=timeout)
        summary(final)
        return final


def open_input(file: str) -> tuple[IO[bytes], str]:
    if file == "-":
        return sys.stdin.buffer, "stdin.jsonl"
    path = Path(file)
    if not path.is_file():
        raise click.BadParameter(f"no such file: {file}", param_hint="FILE")
    return path.open("rb"), path.name


def print_jobs(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from nightowl.outcome import item_counts

    # The pinned version is what ran; the alias asked for may point elsewhere by now.
    table = Table("id", "kind", "model", "status", "items", "created")
    for j in rows:
        model = j.get("model_version") or j["model"]
        if j.get("model_version") and j["model"] != j["model_version"]:
            model += f" (asked {j['model']})"
        table.add_row(j["id"], j["kind"], model, j["status"], item_counts(
            succeeded=j["succeeded"], failed=j["failed"], cancelled=j["cancelled"],
            expired=j["expired"], total=j["total"]), str(j["created_at"])[:19].replace("T", " "))
    Console(width=200).print(table)


def submit(api: Remote, *, kind: str, spec: Any, file: str, fmt: str | None, wait: bool) -> None:
    """`nightowl submit` through the API: upload the file, create the job, print its id last."""
    if fmt == "csv":
        raise click.UsageError("with --api, submit takes JSONL; convert the CSV to JSONL lines "
                               "like {\"custom_id\": ..., \"text\": ...} first")
    body = {
        "model": spec.model, "params": spec.params, "chunk_size": spec.chunk_size,
        "deadline_seconds": spec.deadline.total_seconds() if spec.deadline else None,
        "metadata": spec.metadata, "on_invalid": spec.on_invalid, "truncate": spec.truncate,
        "queue": spec.queue, "priority": spec.priority,
    }
    stream, name = open_input(file)
    try:
        job = api.submit(kind=kind, stream=stream, filename=name, body=body)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    click.echo(f"queued {job['total']} items ({job['failed']} invalid) on "
               f"{job['model_version']}", err=True)
    if not wait:
        click.echo(job["id"])
        return
    from nightowl.cli.watch import left_running

    try:
        click.echo(job["id"])  # first, and inside the try: see nightowl.cli.submit
        final = api.watch(job["id"])
    except KeyboardInterrupt:
        left_running(job["id"])
    sys.exit(0 if final["status"] == "completed" else 1)

"""One typed Settings object, read from the environment (prefix NIGHTOWL_)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from nightowl.common.errors import ConfigError, InvalidInput
from nightowl.common.timespec import parse_keep

EMBEDDED = "embedded"
_REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://", "valkey://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NIGHTOWL_", extra="ignore")

    # Where nightowl keeps its SQLite file, models, artifacts and the embedded broker's socket.
    home: Path = Field(default_factory=lambda: Path.home() / ".nightowl")
    # SQLAlchemy URL; empty means a SQLite file in `home`.
    database_url: str = ""
    # A redis:// URL, or "embedded" to run a Valkey server as a child of `nightowl up`.
    redis_url: str = EMBEDDED
    model_dir: Path | None = None
    artifact_dir: Path | None = None
    # Directories that local model sources must resolve under (model_dir and artifact_dir are
    # always allowed); colon-separated in the environment.
    model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Where artifacts every host needs live (model versions, checkpoints, uploads, outputs):
    # empty or a local folder keeps them on this host; s3://bucket/prefix on any S3 store.
    artifact_url: str = ""
    # Endpoint of an S3-compatible store that is not AWS (MinIO, Ceph, R2, moto).
    s3_endpoint_url: str = ""
    # Each host's content-addressed copy of store artifacts, capped, least recently used out.
    cache_dir: Path | None = None
    cache_max_bytes: int = Field(default=20 * 1024**3, ge=1024 * 1024)
    # A worker unseen this long is dead: its chunks and runs are released at once.
    worker_dead_after: float = Field(default=20.0, ge=2)
    # Hub ids allowed as model sources; empty allows any (the hub is only used when reachable).
    hub_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)

    chunk_size: int = Field(default=256, ge=1, le=100_000)
    max_batch_tokens: int = Field(default=16_384, ge=16)
    max_batch_size: int = Field(default=64, ge=1)
    model_cache_size: int = Field(default=2, ge=1)
    # Seconds a worker holds a chunk or a fine-tune before another may take it over.
    lease_seconds: int = Field(default=120, ge=5)
    reap_interval_seconds: float = Field(default=30.0, gt=0)
    # Chunks of one queue waiting in the broker at once (not yet taken by a worker). The rest
    # wait in SQL, where priority and fair share pick the next; a small window lets a new job
    # start soon, one under the worker count leaves workers idle between chunks.
    dispatch_window: int = Field(default=4, ge=1, le=10_000)
    # A chunk that has been queued but untouched this long is assumed lost and sent again.
    requeue_after_seconds: int = Field(default=300, ge=1)
    # How often beat re-reads the `schedules` table: edits and pauses apply within this long.
    schedule_poll_seconds: float = Field(default=5.0, gt=0, le=300)
    # The shortest period a schedule may have: a cron firing more often is refused (every
    # firing queues a job or a fine-tune, so `* * * * * *` would be a flood). 0: no minimum.
    schedule_min_interval_seconds: int = Field(default=60, ge=0)
    # catchup=all after beat was down: at most this many missed slots fire (the latest ones);
    # older ones are dropped and recorded as missed.
    schedule_max_catchup: int = Field(default=10, ge=1, le=10_000)

    # How long finished jobs' results, batch outputs and uploaded files are kept before the
    # maintenance pass purges them ("30d", "12h", seconds; empty or "forever" keeps them).
    # Fixed on each job or file when it is made, so a later change never cuts short what a
    # user was promised; a tenant's own setting (`nightowl quota set --retention`) wins.
    retention: int | None = None
    # PostgreSQL: job_items is partitioned by the time in job ids, one partition per this many
    # seconds, so a purge drops whole partitions; shorter windows free space sooner.
    partition_seconds: int = Field(default=86_400, ge=1)
    # Connections go through PgBouncer in transaction pooling (or a like pooler): no
    # server-side prepared statements, no session state kept between transactions.
    database_pooler: bool = False

    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_items_per_job: int = Field(default=5_000_000, ge=1)
    max_line_bytes: int = Field(default=1024 * 1024, ge=16)
    # POST /v1/batches checks an input file up to this size before it answers; a larger one
    # answers "validating" at once and a cpu worker checks it (nightowl.openai.validation).
    batch_inline_check_bytes: int = Field(default=1024 * 1024, ge=0)
    # Direct /v1/chat/completions etc. one tenant may have running at once (more get a 429),
    # and how long one may take before it is given up.
    max_direct_in_flight: int = Field(default=32, ge=1)
    direct_timeout_seconds: float = Field(default=600.0, gt=0)
    # Direct requests through the serving lane (Redis, batched across requests, recorded in
    # SQL afterwards); off, each is a one-item job on the bulk path.
    direct_lane: bool = True
    # Any other request body (inline job items, a fine-tune): refused with 413 past this.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Operator bounds on what one fine-tune may ask for (checked at submit, from every door).
    max_finetune_epochs: float = Field(default=100.0, gt=0)
    max_finetune_steps: int = Field(default=1_000_000, ge=1)
    # Job metadata, serialised: a label for the job, not a place to store data.
    max_metadata_bytes: int = Field(default=16 * 1024, ge=64)

    # Worker device: "auto" (CUDA when present), "cpu" or "cuda:N".
    device: str = "auto"
    # Torch threads per worker process; 0 means cores divided by the worker's concurrency.
    torch_threads: int = Field(default=0, ge=0)
    # Prepare the next micro-batch (pad, pin, copy) on a thread while the current one runs,
    # so a fast GPU does not wait on the host.
    prefetch: bool = True
    # Generation batches: "static" pads each micro-batch to its longest answer, "continuous"
    # refills finished slots (transformers' paged continuous batching, CUDA), "auto" picks
    # continuous on CUDA where it runs and static elsewhere.
    generation_batching: Literal["auto", "static", "continuous"] = "auto"

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    @field_validator("model_roots", "hub_allowlist", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.replace(",", ":").split(":") if part]
        return value

    @field_validator("retention", mode="before")
    @classmethod
    def _parse_retention(cls, value: object) -> object:
        if value is None or isinstance(value, int):
            return value
        try:
            return parse_keep(str(value), what="NIGHTOWL_RETENTION")
        except InvalidInput as e:
            raise ValueError(str(e)) from None

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            make_url(value)
        except ArgumentError as e:
            raise ValueError(
                f"NIGHTOWL_DATABASE_URL {value!r} is not a database URL; "
                "use e.g. postgresql+psycopg://user@host/db or sqlite:///path.db"
            ) from e
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if value == EMBEDDED or value.startswith(_REDIS_SCHEMES):
            return value
        raise ValueError(
            f"NIGHTOWL_REDIS_URL {value!r} is not a Redis URL; "
            "use redis://host:6379/0, redis+socket:///path.sock, or 'embedded'"
        )

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        self.home = self.home.expanduser()
        if self.model_dir is None:
            self.model_dir = self.home / "models"
        if self.artifact_dir is None:
            self.artifact_dir = self.home / "artifacts"
        if self.cache_dir is None:
            self.cache_dir = self.home / "cache"
        return self

    @field_validator("artifact_url")
    @classmethod
    def _check_artifact_url(cls, value: str) -> str:
        scheme = value.partition("://")[0] if "://" in value else ""
        if scheme not in ("", "file", "s3"):
            raise ValueError(
                f"NIGHTOWL_ARTIFACT_URL {value!r} is neither a local folder nor s3://bucket/prefix"
            )
        if scheme == "s3" and not value[5:].strip("/"):
            raise ValueError("NIGHTOWL_ARTIFACT_URL s3:// needs a bucket: s3://bucket/prefix")
        return value

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'nightowl.db'}"

    @property
    def embedded_socket(self) -> Path:
        return self.home / "valkey.sock"

    @property
    def broker_url(self) -> str:
        """The URL Celery and redis-py use; the embedded broker is reached over its socket."""
        if self.redis_url == EMBEDDED:
            return f"redis+socket://{self.embedded_socket}"
        return self.redis_url

    @property
    def models_path(self) -> Path:
        assert self.model_dir is not None
        return self.model_dir

    @property
    def artifacts_path(self) -> Path:
        assert self.artifact_dir is not None
        return self.artifact_dir

    @property
    def cache_path(self) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir

    @property
    def allowed_model_roots(self) -> list[Path]:
        return [self.models_path, self.artifacts_path, self.cache_path, *self.model_roots]


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"invalid nightowl settings: {problems}") from e


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def offline_hub() -> None:
    """No hub is configured: fail fast instead of waiting ~50 s on a missing model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# Query parameters that carry a secret in a database or broker URL (libpq's `?password=`,
# redis-py's `?password=`, an S3 store's keys): shown as *** wherever a URL is printed.
_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "sslpassword", "token", "secret",
                            "access_key", "secret_key", "key"})


def redact_url(url: str) -> str:
    """`url` with its password, in the userinfo or in the query, replaced by ***."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(k.lower() in _SECRET_PARAMS for k, _ in query):
        return url  # rebuilt, sqlite:////abs/path would lose a slash
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    if any(k.lower() in _SECRET_PARAMS for k, _ in query):
        hidden = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in query],
                           safe="*/")
        return urlunsplit(parts._replace(netloc=netloc, query=hidden))
    return urlunsplit(parts._replace(netloc=netloc))

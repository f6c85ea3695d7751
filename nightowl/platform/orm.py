"""SQLAlchemy 2 typed models: every job, result, run, metric, model version and schedule."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    column,
    desc,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nightowl.common.enums import (
    ChunkStatus,
    FiringStatus,
    ItemStatus,
    JobOrigin,
    JobStatus,
    RunStatus,
    TaskKind,
)
from nightowl.common.items import utcnow as utcnow  # re-exported: the ORM's default and its callers

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Big integer ids on PostgreSQL, but SQLite only auto-increments a column declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


# After a job id's prefix, "t" and the creation time: ids sort by time within each prefix, which
# is what lets PostgreSQL partition job_items by range of job_id (nightowl.platform.partitions).
# The "t" sorts after every hex digit, so ids of the older all-hex form never fall in a window.
TIME_MARK = "t"


def new_job_id(prefix: str, *, at_ms: int | None = None) -> str:
    """`prefix_t` + 12 hex digits of milliseconds since the epoch + 11 random hex digits."""
    ms = int(time.time() * 1000) if at_ms is None else at_ms
    return f"{prefix}_{TIME_MARK}{ms:012x}{secrets.token_hex(6)[:11]}"


def _enum(cls: type, name: str) -> SAEnum:
    # Stored as the value strings (what users see), checked by a constraint on both databases.
    return SAEnum(
        cls,
        name=name,
        values_callable=lambda e: [m.value for m in e],
        native_enum=False,
        create_constraint=True,
        length=16,
        validate_strings=True,
    )


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware on PostgreSQL; SQLite stores naive UTC, so it is re-attached on load.

    A TypeDecorator because the SQLite dialect swaps a plain DateTime subclass for its own
    DATETIME, which would drop an overridden result_processor and hand back naive values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None and dialect.name == "sqlite":
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: TZDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class DashboardSession(Base):
    """A browser's login to the dashboard: the cookie holds the id, this row only its sha256."""

    __tablename__ = "dashboard_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"),
                                        index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    # When the maintenance pass deletes it (OpenAI's expires_after, else the retention policy
    # in force at upload); NULL keeps it until deleted by hand.
    expires_at: Mapped[datetime | None] = mapped_column(index=True)


class AnalystRole(Base):
    """The login of PostgreSQL's read-only analyst role (see nightowl/platform/analyst_role.py)."""

    __tablename__ = "analyst_roles"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    password: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    # Numbered per owner (nightowl.registry.versions.register): NULL, the shared space, too.
    __table_args__ = (UniqueConstraint("name", "version", "tenant_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The owner; NULL is a shared model (the operator's), visible to every tenant.
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int]
    kind: Mapped[TaskKind] = mapped_column(_enum(TaskKind, "task_kind"))
    source: Mapped[str] = mapped_column(Text)
    revision: Mapped[str | None] = mapped_column(String(100))
    sha256: Mapped[str | None] = mapped_column(String(64))
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    training_run_id: Mapped[str | None] = mapped_column(String(40))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What the version's files take in the artifact store, when the platform wrote them.
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


class ModelAlias(Base):
    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("name", "alias", "tenant_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Whose alias: each tenant has its own `name@prod`; NULL is the shared one.
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(100))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[TaskKind] = mapped_column(_enum(TaskKind, "task_kind"))
    model_ref: Mapped[str] = mapped_column(String(300))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), index=True)
    origin: Mapped[JobOrigin] = mapped_column(_enum(JobOrigin, "job_origin"), index=True,
                                              default=JobOrigin.JOB,
                                              server_default=JobOrigin.JOB.value)
    truncate: Mapped[bool] = mapped_column(Boolean, default=False)
    chunk_size: Mapped[int]
    total_items: Mapped[int] = mapped_column(default=0)
    # Input tokens of the job's valid items, counted at submit when its tenant has a token
    # quota (NULL otherwise: counting costs a pass of the tokenizer over every text).
    total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    succeeded_items: Mapped[int] = mapped_column(default=0)
    failed_items: Mapped[int] = mapped_column(default=0)
    cancelled_items: Mapped[int] = mapped_column(default=0)
    expired_items: Mapped[int] = mapped_column(default=0)
    queue: Mapped[str] = mapped_column(String(40))
    deadline_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    parent_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    # Higher runs first (nightowl.jobs.dispatch picks chunks by priority, then fair share, then
    # age).
    priority: Mapped[int] = mapped_column(default=0, server_default="0")
    input_file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"))
    errors: Mapped[list[Any]] = mapped_column(default=list)
    # How long its results (items, a batch's output and error files) are kept once it has
    # finished: fixed at submit (a batch's output_expires_after, else the tenant's or the
    # operator's retention); NULL keeps them. expires_at is set when it finishes.
    retain_seconds: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    validating_at: Mapped[datetime | None]
    queued_at: Mapped[datetime | None]
    in_progress_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]

    @property
    def done_items(self) -> int:
        return self.succeeded_items + self.failed_items + self.cancelled_items + self.expired_items


class JobItem(Base):
    """One item of a job. On PostgreSQL the table is partitioned by range of job_id (migration
    0011, nightowl.platform.partitions): its primary key there is (job_id, id), so the ORM
    names both, and every update by key can be pruned to one partition."""

    __tablename__ = "job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "custom_id"),
        Index("ix_job_items_job_id_idx", "job_id", "idx", unique=True),
        Index("ix_job_items_finished_at", "finished_at"),
        # Keyset reads across jobs (nightowl.query) go by id; PostgreSQL's key leads with job_id.
        Index("ix_job_items_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    __mapper_args__ = {"primary_key": [id, job_id]}
    idx: Mapped[int]
    line_no: Mapped[int | None]
    custom_id: Mapped[str] = mapped_column(String(200))
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[ItemStatus] = mapped_column(_enum(ItemStatus, "item_status"))
    output: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    tokens_in: Mapped[int | None]
    tokens_out: Mapped[int | None]


_IN_FLIGHT = "status = 'running' OR (status = 'pending' AND enqueued_at IS NOT NULL)"


class JobChunk(Base):
    __tablename__ = "job_chunks"
    __table_args__ = (
        UniqueConstraint("job_id", "chunk_no"),
        Index("ix_job_chunks_status_lease", "status", "lease_expires_at"),
        # "Has this job an open chunk left?", asked at every chunk commit.
        Index("ix_job_chunks_job_id_status", "job_id", "status"),
        # The ready set (nightowl.jobs.dispatch): chunks waiting in SQL, not yet in the broker,
        # in the order a tenant's chunks are dispatched. Partial, so it holds only the backlog
        # and a pick reads a few entries whatever the number of live jobs.
        Index("ix_job_chunks_ready", "queue", "tenant_id", desc(column("priority")),
              "job_created_at", "job_id", "chunk_no",
              postgresql_where=text("status = 'pending' AND enqueued_at IS NULL"),
              sqlite_where=text("status = 'pending' AND enqueued_at IS NULL")),
        # The chunks in flight (running, or waiting in the broker): each tenant's load.
        Index("ix_job_chunks_in_flight", "queue", "tenant_id",
              postgresql_where=text(_IN_FLIGHT), sqlite_where=text(_IN_FLIGHT)),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The job's queue, tenant, priority and age, copied at submit (none of them changes
    # afterwards) so the ready index can order chunks without reading every live job.
    queue: Mapped[str | None] = mapped_column(String(40))
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    priority: Mapped[int] = mapped_column(default=0, server_default="0")
    job_created_at: Mapped[datetime | None]
    chunk_no: Mapped[int]
    start_idx: Mapped[int]
    end_idx: Mapped[int]
    status: Mapped[ChunkStatus] = mapped_column(_enum(ChunkStatus, "chunk_status"))
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    batches: Mapped[int | None]
    device_seconds: Mapped[float | None] = mapped_column(Float)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[TaskKind] = mapped_column(_enum(TaskKind, "task_kind"))
    base_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    dataset: Mapped[dict[str, Any]] = mapped_column(default=dict)
    hyperparams: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"), index=True)
    register_as: Mapped[str | None] = mapped_column(String(200))
    promote_to: Mapped[str | None] = mapped_column(String(100))
    gate_metric: Mapped[str | None] = mapped_column(String(100))
    result_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    promotion: Mapped[dict[str, Any] | None]
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    schedule_run_id: Mapped[int | None]
    priority: Mapped[int] = mapped_column(default=0, server_default="0")
    # The training and eval data written at submit (counted by the tenant's stored-bytes quota).
    data_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class TenantQuota(Base):
    """Operator-set limits for one tenant (nightowl.jobs.quotas); no row or NULL: no limit."""

    __tablename__ = "tenant_quotas"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    max_queued_items: Mapped[int | None] = mapped_column(BigInteger)
    # Input tokens, counted with each model's own tokenizer (OpenAI's "enqueued tokens").
    max_queued_tokens: Mapped[int | None] = mapped_column(BigInteger)
    max_running_jobs: Mapped[int | None]
    # Bytes kept for the tenant: files (uploads, batch outputs), fine-tune data, versions.
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # This tenant's retention of results and files, in seconds, instead of the operator's
    # NIGHTOWL_RETENTION: NULL follows that default, 0 keeps them until deleted.
    retention_seconds: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TrainingMetric(Base):
    __tablename__ = "training_metrics"
    __table_args__ = (UniqueConstraint("run_id", "step", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    step: Mapped[int]
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    ts: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingEvent(Base):
    __tablename__ = "training_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        ForeignKey("training_runs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ts: Mapped[datetime] = mapped_column(default=utcnow)


class Schedule(Base):
    __tablename__ = "schedules"
    # Per tenant: a taken name must not tell one tenant what another named its schedules.
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    target: Mapped[str] = mapped_column(String(20))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    catchup: Mapped[str] = mapped_column(String(20), default="once")
    last_fired_for: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "scheduled_for"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime]
    fired_at: Mapped[datetime] = mapped_column(default=utcnow)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    training_run_id: Mapped[str | None] = mapped_column(ForeignKey("training_runs.id"))
    status: Mapped[str] = mapped_column(String(20), default=FiringStatus.FIRING.value)
    outcome: Mapped[dict[str, Any] | None]
    fired_by: Mapped[str | None] = mapped_column(String(200))


class Worker(Base):
    """One `nightowl worker` process: its heartbeat is how the fleet knows it is alive."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    queues: Mapped[str] = mapped_column(String(100))
    device: Mapped[str] = mapped_column(String(40))
    concurrency: Mapped[int] = mapped_column(default=1)
    # alive, stopped (shut down cleanly) or dead (missed its heartbeats; leases released).
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    current: Mapped[dict[str, Any]] = mapped_column(default=dict)
    items_done: Mapped[int] = mapped_column(BigInteger, default=0)
    items_per_s: Mapped[float] = mapped_column(Float, default=0.0)


class FleetLock(Base):
    """A named lease one process of the fleet holds at a time (the maintenance pass). A row,
    not a session advisory lock: behind PgBouncer's transaction pooling a session lock taken
    in one transaction may be released on another server connection, or never."""

    __tablename__ = "fleet_locks"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None]

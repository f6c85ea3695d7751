"""Statuses and kinds: one definition shared by the database, the API and the CLI."""

from __future__ import annotations

from enum import Enum


class TaskKind(str, Enum):
    GENERATE = "generate"
    TRANSLATE = "translate"
    SENTIMENT = "sentiment"
    EMBED = "embed"

    @property
    def input_field(self) -> str:
        return "source" if self is TaskKind.TRANSLATE else "text"

    @property
    def article(self) -> str:
        """The kind after its article, for sentences: "an embed", "a sentiment"."""
        return ("an " if self.value[0] in "aeiou" else "a ") + self.value


# The names a fine-tune's kind may be given by (CLI --kind, schedule templates): the trainable
# kinds, and their long forms.
KIND_ALIASES = {"translation": "translate", "generation": "generate", "sentiment": "sentiment",
                "translate": "translate", "generate": "generate"}


class JobStatus(str, Enum):
    VALIDATING = "validating"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED}
)


class OnInvalid(str, Enum):
    """What a job does with input lines it cannot run."""

    REJECT = "reject"  # queue nothing; list every bad line
    SKIP = "skip"  # bad lines become failed items; the rest runs


class JobOrigin(str, Enum):
    """Which door a job came through, fixed at creation (`jobs.origin`)."""

    JOB = "job"  # a bulk job: CLI, /v1/jobs, a schedule
    BATCH = "batch"  # an OpenAI batch (/v1/batches)
    DIRECT = "direct"  # one OpenAI request served on the workers (/v1/chat/completions, ...)

    @property
    def id_prefix(self) -> str:
        # What OpenAI's clients expect an id to start with; never read back to tell origins.
        return {"job": "job", "batch": "batch", "direct": "req"}[self.value]


class ItemStatus(str, Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class ChunkStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class ErrorCode(str, Enum):
    INVALID_INPUT = "invalid_input"
    TOO_LONG = "too_long"
    MODEL_ERROR = "model_error"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    TIMEOUT = "timeout"
    # A request body refused at submit (OpenAI's codes): the line fails, the batch runs on.
    INVALID_REQUEST = "invalid_request"
    MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    MODEL_NOT_FOUND = "model_not_found"


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class Queue(str, Enum):
    CPU = "cpu"
    GPU = "gpu"
    TRAIN = "train"


class TaskName(str, Enum):
    """Celery task names: producers send by name and never import task code."""

    RUN_CHUNK = "nightowl.run_chunk"
    REAP = "nightowl.reap"
    RUN_FINETUNE = "nightowl.run_finetune"
    VALIDATE_BATCH = "nightowl.validate_batch"


class WorkerStatus(str, Enum):
    """A worker process as its heartbeats tell it."""

    ALIVE = "alive"
    STOPPED = "stopped"  # said goodbye
    DEAD = "dead"  # stopped heartbeating; its leases were freed


class ScheduleTarget(str, Enum):
    """What a schedule submits when it fires."""

    JOB = "job"
    FINETUNE = "finetune"


class Catchup(str, Enum):
    """Slots a schedule missed (beat was down): fire the last once, fire each, or none."""

    ONCE = "once"
    ALL = "all"
    NONE = "none"


class FiringStatus(str, Enum):
    """One schedule firing (`schedule_runs.status`): how far it got and how its work ended."""

    FIRING = "firing"  # row claimed, work being submitted
    SUBMITTED = "submitted"  # job or fine-tune queued
    SKIPPED = "skipped"  # nothing to do (e.g. no new labelled rows); reason in outcome
    FAILED = "failed"  # could not submit, or the fine-tune failed
    SUCCEEDED = "succeeded"  # the fine-tune finished (promoted or not: see outcome)
    CANCELLED = "cancelled"

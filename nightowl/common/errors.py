"""All of nightowl's errors. Translated only at the edges (HTTP status, CLI message, error row)."""

from __future__ import annotations


class NightowlError(Exception):
    """Base class: the message says what was wrong and what to do."""


class ConfigError(NightowlError):
    """A setting is malformed."""


class NotFound(NightowlError):
    """A job, model, run, file or schedule does not exist (or belongs to another tenant)."""


class InvalidInput(NightowlError):
    """User input that cannot be accepted; `problems` lists (line or field, message)."""

    SHOWN = 50

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None, *,
                 param: str | None = None, of_lines: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []
        # The request field at fault, for API clients (OpenAI's error.param).
        self.param = param
        # (invalid, total) lines of a file, when `problems` lists only the first of them.
        self.of_lines = of_lines

    def __str__(self) -> str:
        base = super().__str__()
        if not self.problems:
            return base
        shown = "\n".join(f"  {where}: {what}" for where, what in self.problems[:self.SHOWN])
        invalid = self.of_lines[0] if self.of_lines else len(self.problems)
        more = invalid - min(len(self.problems), self.SHOWN)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        if more > 0 and self.of_lines:
            tail += f" ({invalid} of {self.of_lines[1]} lines)"
        return f"{base}\n{shown}{tail}"


class RequestRefused(InvalidInput):
    """An OpenAI request body refused as OpenAI would: its error `code` and `param`."""

    def __init__(self, message: str, *, code: str, param: str | None) -> None:
        super().__init__(message, param=param)
        self.code = code


class ModelNotFound(NotFound):
    """A request names no model the caller can use (OpenAI's 404 model_not_found)."""

    code = "model_not_found"
    param = "model"


class InvalidParams(InvalidInput):
    """Generation / classification parameters that the runner cannot use."""


class Conflict(NightowlError):
    """The request is valid but the object's state does not allow it (cancel a finished job)."""


class ModelLoadError(NightowlError):
    """A model could not be loaded safely (missing, pickle weights, outside the model roots)."""


class RateLimited(NightowlError):
    """A limit is reached for now; `retry_after` says in how many seconds to try again."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """A tenant is over an operator-set limit; nothing was stored. Back off and retry later."""

    def __init__(self, message: str, *, limit: str, allowed: int, would_be: int,
                 retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = limit  # the quota's name, e.g. max_queued_items
        self.limit = limit
        self.allowed = allowed
        self.would_be = would_be

    @property
    def over_by(self) -> int:
        return self.would_be - self.allowed


class BrokerUnavailable(NightowlError):
    """The message broker could not be reached."""


class Unauthorized(NightowlError):
    """A missing or unknown API key."""


class SchemaOutdated(NightowlError):
    """The database has not been migrated to the revision this code needs."""


class ArtifactError(NightowlError):
    """The artifact store could not be read or written, or an artifact failed its checksum."""

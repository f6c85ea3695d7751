"""Request and response bodies (they become the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from nightowl.common.specs import JobRequest
from nightowl.jobs.inputs import MAX_CUSTOM_ID
from nightowl.jobs.views import JobView


class JobItemIn(BaseModel):
    custom_id: str | None = Field(default=None, max_length=MAX_CUSTOM_ID,
                                  description="The item's id in the results (default: its "
                                              "position, from 1)")
    text: str | None = Field(default=None, description="The text (generate, sentiment, embed)")
    source: str | None = Field(default=None, description="The text to translate (translate)")
    params: dict[str, Any] | None = Field(default=None, description="This item's own params, "
                                          "over the job's")


class JobCreate(JobRequest):
    """A job's request (nightowl.common.specs.JobRequest) with its items inline or as a file id."""

    items: list[JobItemIn] | None = Field(default=None, description="Items inline")
    file_id: str | None = Field(default=None, description="Or a JSONL or CSV file uploaded to "
                                "/v1/files")
    input_format: Literal["jsonl", "csv"] | None = Field(
        default=None, description="The file's format (default: csv for a file uploaded under a "
                                  ".csv name or when a column is named, else jsonl)")
    column: str | None = Field(default=None, max_length=200,
                               description="CSV column holding the text (default: the kind's "
                                           "input field, `text` or `source`)")
    id_column: str | None = Field(default=None, max_length=200,
                                  description="CSV column holding the custom_id (default: the "
                                              "row's line number)")


class JobHealth(BaseModel):
    queue: str
    broker: bool = Field(description="Whether the broker answers a ping")
    workers: int | None = Field(description="Workers that say they consume the queue (None: "
                                "the broker is down, nobody could be asked)")
    warning: str | None = Field(description="Why the job cannot run now, and what to start")


class JobList(BaseModel):
    data: list[JobView]
    has_more: bool


class ResultRow(BaseModel):
    custom_id: str
    status: str
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    model: str
    tokens_in: int | None
    tokens_out: int | None
    worker: str | None
    device: str | None
    attempts: int
    started_at: str | None
    finished_at: str | None


class ResultPage(BaseModel):
    data: list[ResultRow]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page")


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong and what to do")
    type: str
    param: str | None = Field(default=None, description="The request field at fault")
    code: str | None = None
    problems: list[dict[str, Any]] | None = Field(
        default=None, description="Each bad line or field: {where, message}, or the validator's")


class ErrorResponse(BaseModel):
    """Every error answer, in OpenAI's shape so its SDKs raise the right exception class."""

    error: ErrorDetail


# Documented on every /v1 route, so a client (and the schema fuzzer) can rely on error bodies.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request or input; problems names "
          "each bad line or field"},
    401: {"model": ErrorResponse, "description": "Missing or unknown API key"},
    404: {"model": ErrorResponse, "description": "No such object (for this tenant)"},
    409: {"model": ErrorResponse, "description": "The object's state does not allow this"},
    429: {"model": ErrorResponse, "description": "Over a tenant quota; nothing was stored. "
          "Retry after the Retry-After header's seconds; error.code names the limit"},
    422: {"model": ErrorResponse, "description": "A parameter or the body does not match "
          "this schema"},
}

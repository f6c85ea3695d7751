"""Bodies of the OpenAI-compatible Files and Batch endpoints, field for field as OpenAI's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchCreate(BaseModel):
    input_file_id: str = Field(description="A file uploaded with purpose=batch")
    endpoint: str = Field(description="/v1/completions, /v1/chat/completions, /v1/embeddings, "
                                      "/v1/translations or /v1/classifications")
    completion_window: str = Field(description="Only 24h")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Up to 16 string pairs; nightowl_queue=gpu picks the GPU queue")
    output_expires_after: dict[str, Any] | None = Field(
        default=None, description="{anchor: created_at, seconds: 3600..2592000}: the output "
        "and error files (and the batch's results) are deleted that long after they are made")


class BatchError(BaseModel):
    code: str | None = None
    message: str | None = None
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int = Field(description="Requests that ran, or were refused, and went wrong")
    cancelled: int = Field(0, description="nightowl: requests a cancel stopped before they ran")
    expired: int = Field(0, description="nightowl: requests the deadline stopped before they ran")


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class Batch(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired",
                    "cancelling", "cancelled"]
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, Any] | None = None
    usage: BatchUsage | None = Field(None, description="Tokens of the requests that ran, summed "
                                     "from their rows (null before any has run)")


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Model(BaseModel):
    id: str = Field(description="What to put in a request's model: NAME, NAME@ALIAS or NAME@vN")
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: str = Field(description="nightowl: generate, translate, sentiment or embed")
    version: str = Field(description="nightowl: the version the id resolves to now")
    endpoints: list[str] = Field(description="nightowl: the endpoints that serve this model")
    metrics: dict[str, Any] = Field(default_factory=dict, description="nightowl: the version's "
                                    "recorded metrics (a fine-tune's evaluation)")
    base_version: str | None = Field(default=None, description="nightowl: NAME@vN this version "
                                     "was fine-tuned from (none: registered directly)")
    training_run_id: str | None = Field(default=None, description="nightowl: the fine-tune run "
                                        "that made this version")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]

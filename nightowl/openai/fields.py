"""An OpenAI job's own fields (`jobs.metadata["openai"]`): one typed model, read and written
here only, for batches and direct requests alike."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nightowl.platform.orm import Job

KEY = "openai"


class OpenAIFields(BaseModel):
    # A key this model does not name yet (written by a newer process) survives a round trip.
    model_config = ConfigDict(extra="allow")

    endpoint: str = Field(default="", description="/v1/chat/completions, /v1/embeddings, ...")
    model: str | None = Field(default=None,
                              description="The model as the request lines named it")
    completion_window: str = Field(default="24h",
                                   description="A batch's window, as OpenAI names it")
    metadata: dict[str, Any] | None = Field(default=None,
                                            description="A batch's own metadata")
    direct: bool = Field(default=False,
                         description="One request served on the workers, not a batch")
    file_bytes: dict[str, int] = Field(default_factory=dict,
                                       description="Size of each written batch file")
    deleted_files: list[str] = Field(default_factory=list,
                                     description="Batch files the caller deleted")
    usage: dict[str, Any] | None = Field(default=None,
                                         description="A finished batch's token usage, summed")

    def as_metadata(self) -> dict[str, Any]:
        """The job metadata that stores these fields (only those given, as before)."""
        return {KEY: self.model_dump(exclude_unset=True)}


def read_openai(job: Job) -> OpenAIFields:
    return OpenAIFields.model_validate(job.metadata_.get(KEY) or {})


def write_openai(job: Job, **changes: Any) -> OpenAIFields:
    """Set some fields, keeping the others (a new dict, so the JSON column sees the change)."""
    stored = {**(job.metadata_.get(KEY) or {}), **changes}
    fields = OpenAIFields.model_validate(stored)
    job.metadata_ = {**job.metadata_, KEY: {**stored, **fields.model_dump(include=set(changes))}}
    return fields

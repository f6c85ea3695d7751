"""Every request's fields in one place: names, types, ranges, defaults and help text.

A job (and each kind's parameters), a fine-tune (and its hyperparameters) are pydantic models
here; the HTTP bodies derive from them, schedule templates and OpenAI batch lines map onto
them, the CLI reaches them through the job and fine-tune services, and the trainer's
TrainConfig takes its defaults and ranges from them. A bad value is refused at submit with
one message, whichever door it came through. Torch-free.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo

from nightowl.common.config import Settings
from nightowl.common.enums import OnInvalid, TaskKind
from nightowl.common.errors import InvalidInput, InvalidParams
from nightowl.common.values import (
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    bounds,
    check_json,
    describe_number,
    field_types,
    inline_schema,
    invalid,
    param_bool,
    param_float,
    param_int,
    shown,
)

# Generation
# No model here has more positions than this; a larger request is a typo, not a wish.
MAX_NEW_TOKENS = 65_536
DEFAULT_MAX_NEW_TOKENS = 32
MAX_RETURN_SEQUENCES = 8
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 200
MAX_TOP_LOGPROBS = 20
# OpenAI's range for presence_penalty and frequency_penalty.
PENALTY_RANGE = (-2.0, 2.0)
# torch.manual_seed takes a non-negative 64-bit integer.
SEED_RANGE = (0, 2**63 - 1)
MAX_TOP_K = 1_000_000
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
# Below these the sampler divides logits into infinities (temperature 1e-320 is a torch error,
# not a colder sample): refused at submit, so no job, schedule or batch line reaches a worker
# with one. An OpenAI request's temperature under the floor means greedy (nightowl.openai).
MIN_TEMPERATURE = 0.01
MIN_REPETITION_PENALTY = 0.01
# Translation
DEFAULT_TRANSLATE_NEW_TOKENS = 128
MAX_BEAMS = 8
# Embeddings: no encoder here is wider than this; `dimensions` above the model's own width is
# refused by the runner (and by a batch line, which knows the model).
MAX_DIMENSIONS = 65_536
ENCODING_FORMATS = ("float", "base64")
MAX_CHUNK_SIZE = 100_000


class _Params(BaseModel):
    """A kind's runner parameters; every one optional (None: the runner's default)."""

    model_config = ConfigDict(extra="forbid")


class GenerateParams(_Params):
    max_new_tokens: int | None = Field(
        None, ge=1, le=MAX_NEW_TOKENS,
        description=f"Most tokens to generate (default {DEFAULT_MAX_NEW_TOKENS}); with the "
                    "prompt it must fit the model's context")
    temperature: float | None = Field(None, ge=MIN_TEMPERATURE, description="Sampling temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass")
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K,
                              description="Sample from the k likeliest tokens (0: all)")
    do_sample: bool | None = Field(None, description="Sample instead of greedy decoding "
                                   "(default: on when a sampling parameter is given)")
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1],
                             description="Makes sampling repeatable")
    num_return_sequences: int | None = Field(None, ge=1, le=MAX_RETURN_SEQUENCES,
                                             description="Completions per item (default 1)")
    stop: str | list[str] | None = Field(
        None, description=f"Stop at any of these strings (up to {MAX_STOP_STRINGS}, each at "
                          f"most {MAX_STOP_LENGTH} characters)")
    logprobs: bool | None = Field(None, description="Return each new token's log-probability")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                     description="Alternatives per token with logprobs")
    presence_penalty: float | None = Field(None, ge=PENALTY_RANGE[0], le=PENALTY_RANGE[1],
                                           description="OpenAI's presence penalty")
    frequency_penalty: float | None = Field(None, ge=PENALTY_RANGE[0], le=PENALTY_RANGE[1],
                                            description="OpenAI's frequency penalty")
    repetition_penalty: float | None = Field(None, ge=MIN_REPETITION_PENALTY,
                                             description="Hugging Face's repetition penalty")


class TranslateParams(_Params):
    max_new_tokens: int | None = Field(
        None, ge=1, le=MAX_NEW_TOKENS,
        description=f"Most tokens per translation (default {DEFAULT_TRANSLATE_NEW_TOKENS})")
    num_beams: int | None = Field(None, ge=1, le=MAX_BEAMS,
                                  description="Beam search width (default: the model's)")


class SentimentParams(_Params):
    all_scores: bool | None = Field(None, description="Every label's score, not just the top "
                                    "one")


class EmbedParams(_Params):
    # Keeps the first N components, then normalises again, as OpenAI's text-embedding-3 do.
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS,
                                   description="Keep the first N components (at most the "
                                               "model's width)")
    normalize: bool | None = Field(None, description="Unit-length vectors (default true)")


PARAMS_MODELS: dict[TaskKind, type[_Params]] = {
    TaskKind.GENERATE: GenerateParams,
    TaskKind.TRANSLATE: TranslateParams,
    TaskKind.SENTIMENT: SentimentParams,
    TaskKind.EMBED: EmbedParams,
}
PARAMS: dict[TaskKind, tuple[str, ...]] = {
    kind: tuple(model.model_fields) for kind, model in PARAMS_MODELS.items()}
GENERATE_PARAMS = PARAMS[TaskKind.GENERATE]
TRANSLATE_PARAMS = PARAMS[TaskKind.TRANSLATE]
SENTIMENT_PARAMS = PARAMS[TaskKind.SENTIMENT]
EMBED_PARAMS = PARAMS[TaskKind.EMBED]


def stop_strings(value: Any) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    ok = (
        isinstance(values, list)
        and len(values) <= MAX_STOP_STRINGS
        and all(isinstance(v, str) and 0 < len(v) <= MAX_STOP_LENGTH for v in values)
    )
    if not ok:
        raise InvalidParams(
            f"stop must be a non-empty string or a list of up to {MAX_STOP_STRINGS} non-empty "
            f"strings of at most {MAX_STOP_LENGTH} characters, got {value!r}",
            [("stop", "string or list of strings")],
        )
    return list(values)


def _check_param(name: str, info: FieldInfo, params: dict[str, Any]) -> None:
    types = field_types(info)
    low, low_open, high, _ = bounds(info)
    if name == "stop":
        stop_strings(params.get(name))
    elif bool in types:
        param_bool(params, name, None)
    elif int in types:
        assert low is not None and high is not None
        param_int(params, name, None, int(low), int(high))
    elif float in types:
        assert low is not None
        param_float(params, name, low=low, high=math.inf if high is None else high,
                    low_open=low_open, describe=describe_number(low, low_open, high))


def check_params(kind: TaskKind, params: object) -> dict[str, Any]:
    """A kind's params checked at submit with the rules its runner applies (less what only a
    loaded model knows: its context length and width)."""
    if not isinstance(params, dict):
        raise InvalidParams("params must be an object of name: value", [("params", "object")])
    check_json("params", params)
    model = PARAMS_MODELS[kind]
    allowed = tuple(model.model_fields)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidParams(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {kind.value}; "
            f"allowed: {', '.join(allowed)}",
            [(name, "not a parameter of this task") for name in unknown])
    for name, info in model.model_fields.items():
        if name in params:  # per item with its own params: only what was given
            _check_param(name, info, params)
    return params


def params_schema() -> dict[str, Any]:
    """The per-kind params for the OpenAPI document: one object schema per kind."""
    return {"anyOf": [{**inline_schema(m), "title": f"{k.value} params"}
                      for k, m in PARAMS_MODELS.items()]}


class JobRequest(BaseModel):
    """A bulk job's request, the same from every door (its items travel apart)."""

    kind: TaskKind = Field(description="generate, translate, sentiment or embed")
    model: str = Field(description="NAME, NAME@ALIAS or NAME@vN; pinned to a version at submit")
    params: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=params_schema(),
        description="Model parameters for every item of the kind; an item's own params win")
    chunk_size: int | None = Field(default=None, ge=1, le=MAX_CHUNK_SIZE,
                                   description="Items per chunk (default NIGHTOWL_CHUNK_SIZE)")
    deadline_seconds: float | None = Field(
        default=None, gt=0, description="Expire what is unfinished after this many seconds")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Labels kept on the job")
    on_invalid: OnInvalid = Field(
        default=OnInvalid.REJECT, description="reject: queue nothing if an item is bad; skip: "
                                              "run the rest")
    truncate: bool = Field(default=False,
                           description="Truncate texts longer than the model accepts")
    queue: Literal["cpu", "gpu"] = Field(default="cpu", description="Worker queue to run on")
    priority: int = Field(default=PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX,
                          description="Higher runs first, ahead of fair share between tenants "
                                      "and age")


def check_job_request(**fields: Any) -> JobRequest:
    """The request part of a job, by the rules the HTTP body is held to."""
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as e:
        raise invalid(e) from None


class Lora(BaseModel):
    """LoRA adapters instead of full weights; merged into the model when it is saved."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, le=1024, description="Adapter rank")
    alpha: float | None = Field(None, gt=0, le=1e6, description="Adapter scaling (default "
                                "2 * r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input")


def _budget(setting: str) -> dict[str, Any]:
    # The operator's settings bound the training budget, so a typo cannot run a billion epochs.
    return {"x-bounded-by": f"NIGHTOWL_{setting.upper()}", "x-setting": setting}


class Hyperparameters(BaseModel):
    """A fine-tune's hyperparameters; the defaults are what the trainer uses when one is left
    out."""

    model_config = ConfigDict(extra="forbid")
    epochs: float = Field(1.0, gt=0, json_schema_extra=_budget("max_finetune_epochs"),
                          description="Passes over the training rows; ignored when max_steps "
                                      "is set")
    max_steps: int | None = Field(None, ge=1, json_schema_extra=_budget("max_finetune_steps"),
                                  description="Optimizer steps (overrides epochs)")
    lr: float = Field(5e-5, gt=0, le=10.0, description="Peak learning rate, reached after "
                      "warmup_steps and decayed linearly to zero")
    batch_size: int = Field(16, ge=1, le=4096, description="Rows per micro-batch; one "
                            "optimizer step sees batch_size * grad_accum rows")
    grad_accum: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step")
    warmup_steps: int = Field(0, ge=0, json_schema_extra=_budget("max_finetune_steps"),
                              description="Steps of linear learning-rate warm-up")
    weight_decay: float = Field(0.0, ge=0, le=10.0, description="AdamW decay, on matrices "
                                "only (biases and norms are left alone)")
    seed: int = Field(0, ge=0, le=SEED_RANGE[1], description="Seeds the data order, dropout "
                      "and any new head: a rerun reproduces a run")
    eval_every: int | None = Field(None, ge=1, json_schema_extra=_budget("max_finetune_steps"),
                                   description="Evaluate every N steps (always at the end)")
    checkpoint_every: int = Field(50, ge=1, json_schema_extra=_budget("max_finetune_steps"),
                                  description="Checkpoint every N steps")
    keep_checkpoints: int = Field(2, ge=1, le=100, description="Checkpoints kept on disk")
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per sequence (source and "
                            "target each, for translation); longer rows are truncated")
    lora: Lora | None = Field(None, description="Train LoRA adapters, e.g. {\"r\": 8, "
                              "\"alpha\": 16}")
    group_by_length: bool = Field(False, description="Batch rows of similar length together "
                                  "(within shuffled windows) to cut padding; off by default, "
                                  "as where length tracks the label every batch would be one "
                                  "class")


HYPERPARAMS = tuple(Hyperparameters.model_fields)


def effective_hyperparams(given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter a run trains with: those given, and the defaults for the rest
    (LoRA's alpha included), so a run's page shows all that decided it."""
    full = Hyperparameters.model_validate(
        {k: v for k, v in given.items() if v is not None and k in HYPERPARAMS}).model_dump()
    if full["lora"] is not None and full["lora"]["alpha"] is None:
        full["lora"]["alpha"] = 2 * full["lora"]["r"]
    return full


def _hyper_problem(info: FieldInfo, value: Any, cap: float | None) -> str | None:
    integer = int in field_types(info)
    low, low_open, high, high_open = bounds(info)
    if high is None:
        high = cap
    assert low is not None
    ok_type = (isinstance(value, int) if integer else isinstance(value, int | float)) \
        and not isinstance(value, bool) and math.isfinite(value)
    if ok_type and (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high)):
        return None
    kind = "an integer" if integer else "a number"
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    limit = f" ({extra['x-bounded-by']})" if cap is not None and "x-setting" in extra else ""
    top = f"{int(high)}" if integer and high is not None else f"{high:g}"
    most = f" and {'under' if high_open else 'at most'} {top}{limit}" if high is not None else ""
    return f"must be {kind} {'>' if low_open else '>='} {low:g}{most}, not {shown(value)}"


def check_hyperparams(hyper: object, settings: Settings | None) -> dict[str, Any]:
    """Known names, numbers in range and (given the operator's settings) a training budget
    under their limits; the hyperparameters as given, for the run row."""
    if not isinstance(hyper, dict):
        raise InvalidInput("hyperparameters must be an object", param="hyperparameters")
    unknown = sorted(set(hyper) - set(HYPERPARAMS))
    if unknown:
        raise InvalidInput(f"hyperparameters: unknown {unknown}; known: "
                           f"{', '.join(HYPERPARAMS)}", param="hyperparameters")
    problems = []
    for name, info in Hyperparameters.model_fields.items():
        if name not in hyper:
            continue
        value = hyper[name]
        if value is None and info.default is not None:
            problems.append((f"hyperparameters.{name}", "is null; leave it out for the "
                             f"default ({info.default!r})"))
            continue
        if value is None:
            continue
        if name == "lora":
            problems += _lora_problems(value)
            continue
        if bool in field_types(info):
            if not isinstance(value, bool):
                problems.append((f"hyperparameters.{name}", f"must be true or false, not "
                                 f"{shown(value)}"))
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        setting = extra.get("x-setting")
        cap = getattr(settings, str(setting)) if settings and setting else None
        if (problem := _hyper_problem(info, value, cap)) is not None:
            problems.append((f"hyperparameters.{name}", problem))
    if problems:
        raise InvalidInput("invalid hyperparameters", problems, param=problems[0][0])
    return hyper


def _lora_problems(value: object) -> list[tuple[str, str]]:
    where = "hyperparameters.lora"
    if not isinstance(value, dict):
        return [(where, f"must be an object like {{\"r\": 8, \"alpha\": 16}}, not {value!r}")]
    unknown = sorted(set(value) - set(Lora.model_fields))
    if unknown:
        return [(where, f"unknown keys {unknown}; use {', '.join(Lora.model_fields)}")]
    return [(f"{where}.{name}", problem) for name, info in Lora.model_fields.items()
            if value.get(name) is not None
            and (problem := _hyper_problem(info, value[name], None)) is not None]


TRAINABLE_KINDS = (TaskKind.SENTIMENT, TaskKind.TRANSLATE, TaskKind.GENERATE)
# Share of the training rows held out for evaluation when no eval data is given.
DEFAULT_EVAL_SPLIT = 0.1
# The trainer's evaluation metrics; only one of them may decide a promotion.
EVAL_PREFIX = "eval/"
# Which eval metric decides a promotion when none is named, and whether higher is better.
DEFAULT_GATE = {
    TaskKind.SENTIMENT: "eval/accuracy",
    TaskKind.TRANSLATE: "eval/bleu",
    TaskKind.GENERATE: "eval/perplexity",
}
LOWER_IS_BETTER = {"eval/loss", "eval/perplexity"}


def is_eval_metric(key: str) -> bool:
    return key.startswith(EVAL_PREFIX)


class FinetuneRequest(BaseModel):
    """A fine-tune's request, the same from every door (its data travel apart)."""

    kind: TaskKind = Field(description="What the model learns: sentiment, translate or "
                                       "generate")
    base: str = Field(description="Base model: NAME, NAME@ALIAS or NAME@vN")
    eval_split: float = Field(default=DEFAULT_EVAL_SPLIT, gt=0, lt=1,
                              description="Share of the training rows held out for evaluation "
                                          "when no eval data is given")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=inline_schema(Hyperparameters),
        description="Training settings; budgets are bounded by the operator's limits")
    register_as: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Model name for the result (default: the base's name)")
    promote_to: str | None = Field(
        default=None, min_length=1, max_length=100,
        description="Move this alias to the result only if it beats the holder")
    gate: str | None = Field(
        default=None, min_length=1, max_length=100,
        description="Eval metric that decides the promotion (default per kind)")
    priority: int = Field(default=PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX,
                          description="Higher runs first, ahead of fair share between tenants "
                                      "and age")

    @field_validator("kind")
    @classmethod
    def _trainable(cls, kind: TaskKind) -> TaskKind:
        if kind not in TRAINABLE_KINDS:
            raise ValueError(f"{kind.value} models are not fine-tuned here; fine-tune one of "
                             f"{', '.join(k.value for k in TRAINABLE_KINDS)}")
        return kind

    @field_validator("gate")
    @classmethod
    def _eval_metric(cls, gate: str | None, info: ValidationInfo) -> str | None:
        if gate is not None and not is_eval_metric(gate):
            kind = info.data.get("kind")
            example = DEFAULT_GATE.get(kind, "eval/accuracy") if kind else "eval/accuracy"
            raise ValueError(f"{gate!r} must be an eval metric such as {example}")
        return gate


def check_finetune_request(**fields: Any) -> FinetuneRequest:
    """The request part of a fine-tune, by the rules the HTTP body is held to."""
    try:
        return FinetuneRequest.model_validate(fields)
    except ValidationError as e:
        raise invalid(e) from None

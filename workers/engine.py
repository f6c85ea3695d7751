"""Run a chunk's items through a runner: group by params, pack by token budget, survive failures.

A bad item becomes an error row, never a failed chunk: bad parameters, over-long texts, and
items that crash the model are reported one by one while their neighbours still run. Every item
comes back as the row the result commit writes (nightowl.common.items.ItemOutcome), stopped ones
too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import torch

from nightowl.common.config import get_settings
from nightowl.common.enums import ErrorCode, ItemStatus
from nightowl.common.errors import InvalidInput
from nightowl.common.items import ItemOutcome, utcnow
from nightowl.common.tokens import Fit, fit_context
from nightowl_workers.batching import plan_micro_batches
from nightowl_workers.runners import Runner
from nightowl_workers.runners.base import Encoded, Prepared

if TYPE_CHECKING:
    from nightowl_workers.runners.streaming import TextListener

log = logging.getLogger(__name__)


@dataclass
class WorkItem:
    key: int
    text: str
    # Job params merged with the item's own.
    params: dict[str, Any]
    # Told the item's text as it is generated (a streamed direct request); None: nobody is.
    listener: TextListener | None = None


@dataclass
class _Group:
    params: dict[str, Any]
    items: list[WorkItem]


@dataclass
class _Budget:
    # Padded tokens per micro-batch. An out-of-memory lowers it for the rest of the call, so
    # later micro-batches are split up front instead of each failing once before halving.
    tokens: int


# An item with its token length (after truncation) for packing, and its token ids.
_Sized = tuple[WorkItem, int, Encoded]


def run_batched(
    runner: Runner,
    items: Sequence[WorkItem],
    *,
    max_batch_tokens: int,
    max_batch_size: int,
    truncate: bool,
    should_stop: Callable[[], ItemStatus | None] | None = None,
    prefetch: bool | None = None,
) -> Iterator[list[ItemOutcome]]:
    """Yield every item's outcome, one micro-batch at a time (rejected items first, in one list).

    should_stop() is asked before each micro-batch; once it names a stop (cancelled, expired),
    the items not yet reported come back as stopped, in one last list. Outcomes carry their
    item's key and the micro-batch's start and end; their order follows the batching.
    With prefetch (default: the NIGHTOWL_PREFETCH setting) the next micro-batch is padded and
    copied to the device on a thread while the current one runs; outcomes are the same.
    """
    started = utcnow()
    groups, rejected = _sanitize(runner, items)
    budget = _Budget(max_batch_tokens)
    steps: list[tuple[dict[str, Any], list[_Sized]]] = []
    for group in groups:
        sized, too_long = _measure(runner, group.items, truncate)
        rejected += too_long
        plan = plan_micro_batches(
            [length for _, length, _ in sized],
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
        )
        steps += [(group.params, [sized[i] for i in indexes]) for indexes in plan]
    if rejected:
        started = _stamp(rejected, started)
        yield rejected
    if prefetch is None:
        prefetch = get_settings().prefetch
    # A runner that overrides run() whole (a test double, a custom kind) keeps that seam.
    split = type(runner).run is Runner.run
    ahead = _Prefetcher(runner, truncate) if prefetch and split and steps else None
    try:
        for n, (params, batch) in enumerate(steps):
            stop = should_stop() if should_stop is not None else None
            if stop is not None:
                yield [ItemOutcome.stopped(item.key, stop)
                       for _, left in steps[n:] for item, _, _ in left]
                return
            parts = _split(batch, budget)
            results: list[ItemOutcome] = []
            for p, part in enumerate(parts):
                prepared = ahead.take(params, part) if ahead is not None else None
                if ahead is not None:
                    # Queued before this part's forward, so the host works while it runs.
                    if p + 1 < len(parts):
                        ahead.start(params, parts[p + 1])
                    elif n + 1 < len(steps):
                        next_params, next_batch = steps[n + 1]
                        ahead.start(next_params, _split(next_batch, budget)[0])
                results += _run_batch(runner, part, params, truncate, budget, prepared)
            started = _stamp(results, started)
            yield results
    finally:
        if ahead is not None:
            ahead.close()


def _stamp(outcomes: list[ItemOutcome], started: datetime) -> datetime:
    """Date a micro-batch's outcomes from `started` to now; now is the next one's start."""
    finished = utcnow()
    for outcome in outcomes:
        outcome.started_at, outcome.finished_at = started, finished
    return finished


def _split(batch: list[_Sized], budget: _Budget) -> list[list[_Sized]]:
    """A planned micro-batch in parts under the current budget (one part until an OOM)."""
    parts = plan_micro_batches(
        [length for _, length, _ in batch], max_batch_tokens=budget.tokens,
        max_batch_size=len(batch),
    )
    return [[batch[i] for i in part] for part in parts]


class _Prefetcher:
    """One thread that prepares the next micro-batch while the caller runs the current one.

    Started per call and joined at its end, so no thread outlives a chunk (a Celery prefork
    parent never runs this: no thread exists at fork). The preparation only pads and queues
    copies; the forward stays on the caller's thread, so torch's thread settings hold."""

    def __init__(self, runner: Runner, truncate: bool) -> None:
        self._runner = runner
        self._truncate = truncate
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nightowl-prefetch")
        self._pending: tuple[tuple[int, tuple[int, ...]], Future[Prepared]] | None = None

    @staticmethod
    def _key(params: dict[str, Any], part: list[_Sized]) -> tuple[int, tuple[int, ...]]:
        return id(params), tuple(item.key for item, _, _ in part)

    def start(self, params: dict[str, Any], part: list[_Sized]) -> None:
        texts = [item.text for item, _, _ in part]
        encoded = [enc for _, _, enc in part]
        future = self._pool.submit(self._runner.prepare, texts, params, self._truncate, encoded)
        self._pending = (self._key(params, part), future)

    def take(self, params: dict[str, Any], part: list[_Sized]) -> Future[Prepared] | None:
        """The prepared batch if it is this part (an out-of-memory may have re-split it)."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != self._key(params, part):
            return None
        return pending[1]

    def close(self) -> None:
        self._pending = None
        self._pool.shutdown(wait=True, cancel_futures=True)


def _sanitize(
    runner: Runner, items: Sequence[WorkItem]
) -> tuple[list[_Group], list[ItemOutcome]]:
    """Validate each distinct params set once; group items whose sanitized params are equal."""
    # Per distinct params: the sanitized params (or the error), and the group they go to.
    verdicts: dict[Hashable, _Group | str] = {}
    groups: dict[str, _Group] = {}
    rejected: list[ItemOutcome] = []
    for item in items:
        raw_key = _params_key(item.params)
        if raw_key not in verdicts:
            try:
                clean = runner.sanitize_params(item.params)
            except InvalidInput as e:
                # The headline alone: it names the field and the range, on one line.
                verdicts[raw_key] = str(e.args[0]) if e.args else str(e)
            else:
                # Grouping by the sanitized form lets {} and {"max_new_tokens": 32} share batches.
                clean_key = json.dumps(clean, sort_keys=True, default=repr)
                verdicts[raw_key] = groups.setdefault(clean_key, _Group(clean, []))
        verdict = verdicts[raw_key]
        if isinstance(verdict, str):
            rejected.append(_error(item, ErrorCode.INVALID_INPUT, verdict))
        else:
            verdict.items.append(item)
    return list(groups.values()), rejected


def _params_key(params: dict[str, Any]) -> Hashable:
    """A key equal for equal params: the items themselves when hashable (the usual flat
    params), else their JSON."""
    try:
        return frozenset(params.items())
    except TypeError:
        return json.dumps(params, sort_keys=True, default=repr)


def _measure(
    runner: Runner, items: list[WorkItem], truncate: bool
) -> tuple[list[_Sized], list[ItemOutcome]]:
    """Token lengths for packing; over-long texts are refused unless truncation was asked for
    (nightowl.common.tokens' rule, the one submit applies)."""
    limit = runner.position_limit()
    encodings = runner.encode([item.text for item in items])
    sized: list[_Sized] = []
    refused: list[ItemOutcome] = []
    for item, encoded in zip(items, encodings, strict=True):
        length = len(encoded[0])
        if length == 0:
            refused.append(
                _error(item, ErrorCode.INVALID_INPUT, "text is empty (0 tokens); give some text")
            )
            continue
        verdict = fit_context(runner.kind, length, limit, truncate=truncate)
        if verdict.fit is Fit.ERROR:
            assert verdict.message is not None
            refused.append(_error(item, ErrorCode.TOO_LONG, verdict.message, tokens_in=length))
        else:
            sized.append((item, verdict.tokens, encoded))
    return sized, refused


def _run_batch(
    runner: Runner,
    batch: list[_Sized],
    params: dict[str, Any],
    truncate: bool,
    budget: _Budget,
    prepared: Future[Prepared] | None = None,
) -> list[ItemOutcome]:
    try:
        with runner.listening([item.listener for item, _, _ in batch]):
            if prepared is not None:
                # A failure while preparing surfaces here, handled as if run() had raised it.
                outputs = runner.complete(prepared.result())
            else:
                outputs = runner.run([item.text for item, _, _ in batch], params, truncate,
                                     encoded=[encoded for _, _, encoded in batch])
    except Exception as e:
        if _is_oom(e):
            _release_memory(runner)
            if len(batch) > 1:
                # The token budget was too generous for this device and these lengths.
                log.warning("out of memory on a batch of %d; retrying in halves", len(batch))
                padded = len(batch) * max(length for _, length, _ in batch)
                budget.tokens = max(1, min(budget.tokens, padded // 2))
                half = len(batch) // 2
                return _run_batch(runner, batch[:half], params, truncate, budget) + _run_batch(
                    runner, batch[half:], params, truncate, budget
                )
            message = (
                f"out of memory on this text alone ({e}); shorten it, or lower "
                "NIGHTOWL_MAX_BATCH_TOKENS / use a device with more memory"
            )
            return [_error(batch[0][0], ErrorCode.MODEL_ERROR, message)]
        if len(batch) > 1:
            # One bad item must not fail its neighbours: find it by running them one by one.
            log.warning("batch of %d failed (%s); retrying items one by one", len(batch), e)
            return [
                result
                for sized in batch
                for result in _run_batch(runner, [sized], params, truncate, budget)
            ]
        item = batch[0][0]
        log.warning("item %s failed: %s", item.key, e)
        return [_error(item, ErrorCode.MODEL_ERROR, f"{type(e).__name__}: {e}")]
    return [
        ItemOutcome.succeeded(item.key, output, tokens_in, tokens_out)
        for (item, _, _), (output, tokens_in, tokens_out) in zip(batch, outputs, strict=True)
    ]


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )


def _release_memory(runner: Runner) -> None:
    if runner.device.type == "cuda":
        torch.cuda.empty_cache()


def _error(item: WorkItem, code: ErrorCode, message: str, *, tokens_in: int = 0) -> ItemOutcome:
    return ItemOutcome.failed(item.key, code, message, tokens_in=tokens_in)

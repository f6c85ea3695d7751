"""How a fine-tune ended, in words: the version it registered and what the promotion gate
decided with both figures. One wording for the CLI, the API and the dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nightowl.common.specs import is_eval_metric
from nightowl.platform.orm import ModelVersion, TrainingRun


def version_refs(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    """`name@vN` for each version id: lineage reads as names, never as internal ids."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(ModelVersion.id, ModelVersion.name, ModelVersion.version)
                           .where(ModelVersion.id.in_(wanted)))
    return {i: f"{n}@v{v}" for i, n, v in rows}


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "none"


def promotion_words(promotion: dict[str, Any] | None, promote_to: str | None,
                    *, finished: bool = True) -> str:
    """`promoted to @prod: eval/accuracy 0.8125 beats 0.7500 of tiny-sentiment@v1`."""
    if not promote_to:
        return "no promotion asked"
    if promotion is None:
        return f"@{promote_to} unchanged (the run registered nothing)" if finished \
            else f"promotion to @{promote_to} decided when the run ends"
    alias = promotion.get("alias") or promote_to
    verdict = f"promoted to @{alias}" if promotion.get("promoted") else f"not promoted to @{alias}"
    metric = promotion.get("metric") or "the gate metric"
    incumbent = promotion.get("incumbent_version")
    if promotion.get("candidate") is None:
        figures = f"the run reported no {metric}"
    elif incumbent is None:
        figures = f"{metric} {_figure(promotion.get('candidate'))}, no version held @{alias}"
    elif promotion.get("incumbent") is None:
        figures = (f"{metric} {_figure(promotion.get('candidate'))}; {incumbent} has no "
                   f"{metric} on this eval set")
    else:
        word = "beats" if promotion.get("promoted") else "does not beat"
        figures = (f"{metric} {_figure(promotion.get('candidate'))} {word} "
                   f"{_figure(promotion.get('incumbent'))} of {incumbent}")
    return f"{verdict}: {figures}"


def run_outcome(run: TrainingRun, refs: dict[int, str]) -> dict[str, Any]:
    """The fields every surface shows for a run's result."""
    finished = run.status.terminal
    return {
        "base_version": refs.get(run.base_version_id),
        "result_version": refs.get(run.result_version_id) if run.result_version_id else None,
        "promotion_summary": promotion_words(run.promotion, run.promote_to, finished=finished),
    }


def outcome_line(run: TrainingRun, refs: dict[int, str],
                 metrics: dict[str, Any] | None = None) -> str:
    """One line for `finetune submit --wait`: what the run left behind."""
    return run_line(run_id=run.id, status=run.status.value, error=run.error,
                    metrics=metrics, **run_outcome(run, refs))


def run_line(*, run_id: str, status: str, error: str | None, result_version: str | None,
             promotion_summary: str, metrics: dict[str, Any] | None, **_: Any) -> str:
    """outcome_line from a run's fields as the API shows them (FinetuneOut)."""
    if status != "succeeded":
        return f"{run_id} {status}" + (f": {error}" if error else "")
    figures = ", ".join(f"{k} {_figure(v)}" for k, v in sorted((metrics or {}).items())
                        if is_eval_metric(k))
    registered = (f"registered {result_version}" + (f" ({figures})" if figures else "")
                  if result_version else "registered nothing")
    return f"{run_id} succeeded: {registered}; {promotion_summary}"


def item_counts(*, succeeded: int, failed: int, cancelled: int, expired: int,
                total: int) -> str:
    """`12032 succeeded, 17968 cancelled of 30000`: a cancelled or expired job never reads as
    all done; zero counts other than succeeded are left out."""
    parts = [f"{succeeded} succeeded"] + [f"{n} {word}" for n, word in (
        (failed, "failed"), (cancelled, "cancelled"), (expired, "expired")) if n]
    pending = total - succeeded - failed - cancelled - expired
    if pending > 0:
        parts.append(f"{pending} pending")
    return f"{', '.join(parts)} of {total}"

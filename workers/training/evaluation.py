"""Eval metrics, shared by the training loop and the promotion gate, so that a new version and
the alias' current holder are measured by exactly the same code on the same rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import sacrebleu
import torch
import torch.nn.functional as F

from nightowl.common.enums import TaskKind
from nightowl_workers.device import choose_device
from nightowl_workers.training.data import IGNORE, Encoded, collate, encode_rows
from nightowl_workers.training.modeling import load_model, load_tokenizer


def _noop() -> None:
    pass


def _length_sorted_batches(data: Encoded, batch_size: int) -> list[list[int]]:
    # Longest first, so padding is small and an out-of-memory shows up on the first batch.
    order = sorted(range(len(data)), key=lambda i: -len(data.examples[i].input_ids))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _macro_f1(gold: list[int], pred: list[int]) -> float:
    scores = []
    for c in sorted(set(gold) | set(pred)):
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == c and p == c)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if g != c and p == c)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g == c and p != c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


@torch.inference_mode()
def compute_metrics(
    model: Any,
    tokenizer: Any,
    data: Encoded,
    *,
    device: torch.device,
    batch_size: int,
    max_length: int,
    tick: Callable[[], None] = _noop,
) -> dict[str, float]:
    """Token-weighted eval loss (row-weighted for sentiment) plus the kind's quality metric.
    Leaves the model in eval mode; the training loop switches it back."""
    model.eval()
    if len(data) == 0:
        return {}
    loss_sum, count = 0.0, 0
    gold: list[int] = []
    pred: list[int] = []
    hypotheses: dict[int, str] = {}
    for indices in _length_sorted_batches(data, batch_size):
        tick()
        batch = {k: v.to(device) for k, v in collate(data, indices).items()}
        labels = batch.pop("labels")
        if data.kind is TaskKind.SENTIMENT:
            logits = model(**batch).logits.float()
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            count += len(indices)
            gold += labels.tolist()
            pred += logits.argmax(-1).tolist()
            continue
        if data.kind is TaskKind.TRANSLATE:
            logits = model(**batch, labels=labels).logits.float()
            targets = labels
        else:
            logits = model(**batch).logits.float()[:, :-1]
            targets = labels[:, 1:]
        flat = targets.reshape(-1)
        loss_sum += float(
            F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), flat, ignore_index=IGNORE, reduction="sum"
            )
        )
        count += int((flat != IGNORE).sum())
        if data.kind is TaskKind.TRANSLATE:
            out = model.generate(**batch, max_new_tokens=max_length, num_beams=1, do_sample=False)
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            hypotheses.update(zip(indices, (t.strip() for t in texts), strict=True))
    loss = loss_sum / max(count, 1)
    metrics = {"eval/loss": loss}
    if data.kind is TaskKind.SENTIMENT:
        correct = sum(1 for g, p in zip(gold, pred, strict=True) if g == p)
        metrics["eval/accuracy"] = correct / len(gold)
        metrics["eval/f1"] = _macro_f1(gold, pred)
    elif data.kind is TaskKind.TRANSLATE:
        hyps = [hypotheses[i] for i in range(len(data))]
        metrics["eval/bleu"] = float(sacrebleu.corpus_bleu(hyps, [data.references]).score)
    else:
        metrics["eval/perplexity"] = _perplexity(loss)
    return metrics


def evaluate(
    kind: TaskKind,
    model_source: str,
    eval_rows: Sequence[dict[str, Any]],
    *,
    device: str = "auto",
    max_length: int = 128,
    batch_size: int = 32,
) -> dict[str, float]:
    """The eval metrics of any saved model on `eval_rows` (keys as in training: eval/loss and
    eval/accuracy + eval/f1, eval/bleu or eval/perplexity)."""
    kind = TaskKind(kind)
    target = choose_device(device)
    tokenizer = load_tokenizer(model_source)
    model = load_model(kind, model_source).to(target)
    label2id = None
    if kind is TaskKind.SENTIMENT:
        label2id = {str(name): int(i) for name, i in model.config.label2id.items()}
    data = encode_rows(kind, tokenizer, eval_rows, max_length=max_length, label2id=label2id)
    return compute_metrics(
        model, tokenizer, data, device=target, batch_size=batch_size, max_length=max_length
    )

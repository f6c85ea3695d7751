"""Rows -> token ids once, then padded micro-batches in a seeded, resumable order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidInput

# Cross-entropy ignores this label id; padding in labels must never count as a target.
IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    # Sentiment: [class id]; translation: target ids; generation: unused (labels = inputs).
    target: list[int]


@dataclass
class Encoded:
    kind: TaskKind
    examples: list[Example]
    pad_id: int
    # Raw targets kept for BLEU, which scores detokenised text against the reference.
    references: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.examples)


def encode_rows(
    kind: TaskKind,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    max_length: int,
    label2id: dict[str, int] | None = None,
) -> Encoded:
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise InvalidInput("the tokenizer has no padding token; set one before encoding")
    if kind is TaskKind.SENTIMENT:
        assert label2id is not None
        unknown = sorted({str(r["label"]) for r in rows} - set(label2id))
        if unknown:
            raise InvalidInput(
                f"labels {unknown} are not among the model's labels {sorted(label2id)}; "
                "pass the full label set in the run's `labels`"
            )
        ids = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
        examples = [
            Example(list(x), [label2id[str(r["label"])]])
            for x, r in zip(ids["input_ids"], rows, strict=True)
        ]
        return Encoded(kind, examples, pad_id, [], [])
    if kind is TaskKind.TRANSLATE:
        sources = [r["source"] for r in rows]
        targets = [r["target"] for r in rows]
        src = tokenizer(sources, truncation=True, max_length=max_length)
        tgt = tokenizer(text_target=targets, truncation=True, max_length=max_length)
        examples = [
            Example(list(s), list(t))
            for s, t in zip(src["input_ids"], tgt["input_ids"], strict=True)
        ]
        return Encoded(kind, examples, pad_id, targets, sources)
    eos = tokenizer.eos_token_id
    ids = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    examples = []
    for x in ids["input_ids"]:
        seq = list(x)
        # GPT-style tokenizers add no end marker; appending one teaches the model to stop.
        if eos is not None and (not seq or seq[-1] != eos):
            seq = [*seq[: max_length - 1], eos]
        # One token has nothing to predict and would turn a whole batch's mean loss into NaN.
        if len(seq) >= 2:
            examples.append(Example(seq, []))
    if not examples:
        raise InvalidInput("no generation row is long enough to train on (need two tokens)")
    return Encoded(kind, examples, pad_id, [], [])


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def collate(data: Encoded, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Pads to the longest row of this micro-batch only, which is what keeps CPU runs fast."""
    inputs = [data.examples[i].input_ids for i in indices]
    input_ids = _pad(inputs, data.pad_id)
    attention_mask = _pad([[1] * len(s) for s in inputs], 0)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if data.kind is TaskKind.SENTIMENT:
        batch["labels"] = torch.tensor([data.examples[i].target[0] for i in indices])
    elif data.kind is TaskKind.TRANSLATE:
        batch["labels"] = _pad([data.examples[i].target for i in indices], IGNORE)
    else:
        # Masking by attention, not by pad id: GPT-2 pads with its EOS, which is a real target.
        batch["labels"] = input_ids.masked_fill(attention_mask == 0, IGNORE)
    return batch


def count_tokens(batch: dict[str, torch.Tensor], kind: TaskKind) -> int:
    tokens = int(batch["attention_mask"].sum())
    if kind is TaskKind.TRANSLATE:
        tokens += int((batch["labels"] != IGNORE).sum())
    return tokens


class BatchOrder:
    """Micro-batch m of the run is a pure function of (seed, m): a resumed run sees the same
    rows at the same step as an uninterrupted one, without saving any iterator state.

    Each epoch shuffles the rows and cuts them into batches. With group_by_length it also
    sorts every window of GROUP batches by length and shuffles the batches again, so a batch
    holds rows of similar length and padding all but disappears; it is off by default because
    where length tracks the label (short complaints, long praise) every batch is then one class
    and the model learns little."""

    GROUP = 50

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, *,
                 group_by_length: bool = False) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.per_epoch = math.ceil(len(self.lengths) / batch_size)
        self._epoch = -1
        self._batches: list[list[int]] = []

    def _plan(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        if not self.group_by_length:
            return [perm[i : i + self.batch_size] for i in range(0, len(perm), self.batch_size)]
        window = self.batch_size * self.GROUP
        batches = []
        for start in range(0, len(perm), window):
            chunk = sorted(perm[start : start + window], key=lambda i: self.lengths[i])
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        shuffled = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in shuffled]

    def micro_batch(self, m: int) -> list[int]:
        epoch, pos = divmod(m, self.per_epoch)
        if epoch != self._epoch:
            self._batches = self._plan(epoch)
            self._epoch = epoch
        return self._batches[pos]

    def epoch_at(self, micro_batches_done: int) -> float:
        return micro_batches_done / self.per_epoch

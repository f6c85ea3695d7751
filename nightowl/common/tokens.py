"""Token counts and the context-limit rule, with the `tokenizers` library alone (no torch).

One rule decides whether a text fits a model: submit applies it to the model's files on disk
(`length_checker`, `context_of`), the worker's runners to the loaded model (`fit_context`,
`position_limit`, `new_token_ceiling`), so a line that passes submit is never refused later.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from nightowl.common.enums import TaskKind

# Config fields that bound a model's positions; the smallest present wins.
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx",
                   "max_seq_len")
# Tokenizers without a configured limit report int(1e30); configs carry no such sentinel.
_SANE_LIMIT = 1_000_000
FALLBACK_LIMIT = 512


def position_limit(config: Mapping[str, object], tokenizer_max: object = None) -> int:
    """The longest sequence the model's position embeddings cover.

    The smallest sane value wins: a tokenizer limit below the config's usually records what the
    model was trained on (e.g. RoBERTa's 514 positions vs 512 tokens)."""
    candidates = [config.get(name) for name in POSITION_FIELDS] + [tokenizer_max]
    sane = [c for c in candidates
            if isinstance(c, int) and not isinstance(c, bool) and 0 < c < _SANE_LIMIT]
    return min(sane) if sane else FALLBACK_LIMIT


def shares_context(kind: TaskKind) -> bool:
    """Whether the kind's output is written into the same positions as its input (a decoder's
    continuation); a translator's output and an encoder's label have positions of their own."""
    return kind is TaskKind.GENERATE


def input_room(kind: TaskKind, limit: int) -> int:
    """The most input tokens a kind accepts: a generator keeps one position free, so that any
    accepted prompt gets at least one new token."""
    return max(1, limit - 1) if shares_context(kind) else limit


def new_token_ceiling(kind: TaskKind, limit: int) -> int:
    """The largest max_new_tokens a kind accepts on a model with `limit` positions."""
    return input_room(kind, limit)


def too_long(tokens: int, room: int) -> str:
    return (f"text is {tokens} tokens, the model accepts {room}; "
            "shorten it or resubmit with --truncate")


class Fit(str, Enum):
    FITS = "fits"
    TRUNCATE = "truncate"
    ERROR = "error"


@dataclass(frozen=True)
class Verdict:
    fit: Fit
    # Input tokens the model reads (after truncation).
    tokens: int
    # New tokens it may write: the asked number, clamped to the positions left for a kind that
    # shares its context (finish_reason "length"); the asked number as is for the others.
    max_new_tokens: int | None
    # Set when fit is ERROR: what was wrong and what to do.
    message: str | None = None


def fit_context(kind: TaskKind, tokens: int, limit: int, *, truncate: bool,
                max_new_tokens: int | None = None) -> Verdict:
    """The rule: does a text of `tokens` tokens fit a model of `limit` positions for `kind`?"""
    room = input_room(kind, limit)
    if tokens > room and not truncate:
        return Verdict(Fit.ERROR, tokens, None, too_long(tokens, room))
    kept = min(tokens, room)
    new = max_new_tokens
    if new is not None and shares_context(kind):
        new = max(1, min(new, limit - kept))
    return Verdict(Fit.TRUNCATE if kept < tokens else Fit.FITS, kept, new)


@dataclass(frozen=True)
class _Model:
    tokenizer: Tokenizer
    limit: int
    # The kind a decoder-only LM serves, for callers that do not name one.
    decoder: bool

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)


@lru_cache(maxsize=8)
def _load(model_dir: str) -> _Model | None:
    path = Path(model_dir)
    tok_file, cfg_file = path / "tokenizer.json", path / "config.json"
    if not tok_file.is_file() or not cfg_file.is_file():
        return None
    config = json.loads(cfg_file.read_text())
    tok_cfg_file = path / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_file.read_text()) if tok_cfg_file.is_file() else {}
    tokenizer = Tokenizer.from_file(str(tok_file))
    # Counts, not batches: a padded batch would count its pads.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    architectures = config.get("architectures") or []
    decoder = not config.get("is_encoder_decoder") and any(
        isinstance(a, str) and a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return _Model(tokenizer, position_limit(config, tok_cfg.get("model_max_length")), decoder)


def _local(source: str) -> _Model | None:
    return _load(source) if Path(source).is_dir() else None


def length_checker(source: str, kind: TaskKind | None = None
                   ) -> Callable[[str], str | None] | None:
    """A function that names the problem with a too-long text, or None when it cannot tell.

    `kind` picks the rule (a generator keeps a position free); without it, a decoder-only
    language model is taken to generate and any other model to read its input whole."""
    model = _local(source)
    if model is None:
        return None
    if kind is None:
        kind = TaskKind.GENERATE if model.decoder else TaskKind.SENTIMENT
    room = input_room(kind, model.limit)

    def check(text: str) -> str | None:
        # Every tokenizer we know emits at most one token per byte plus a few specials, so the
        # cheap byte count settles nearly every line without tokenizing it.
        if len(text.encode("utf-8")) + 4 <= room:
            return None
        return fit_context(kind, model.count(text), model.limit, truncate=False).message

    return check


def context_of(source: str) -> tuple[Callable[[str], int], int] | None:
    """(a token counter, the model's position limit) for a local model, or None."""
    model = _local(source)
    if model is None:
        return None
    return model.count, model.limit


def token_decoder(source: str) -> tuple[Callable[[list[int]], str], int] | None:
    """(token ids -> the text they spell, the vocabulary size) for a local model, or None. A
    request given as token ids runs as that text, which the worker's tokenizer reads back."""
    model = _local(source)
    if model is None:
        return None
    tokenizer = model.tokenizer

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)

    return decode, tokenizer.get_vocab_size(with_added_tokens=True)


@lru_cache(maxsize=8)
def hidden_size(source: str) -> int | None:
    """The width of a local model's hidden states (an embedding's full size), or None."""
    cfg_file = Path(source) / "config.json"
    if not cfg_file.is_file():
        return None
    config = json.loads(cfg_file.read_text())
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def batch_counter(source: str) -> Callable[[list[str]], int] | None:
    """A function that counts the input tokens of many texts at once (the same tokenizer the
    context rule counts with), or None for a model nightowl cannot read without torch."""
    model = _local(source)
    if model is None:
        return None
    tokenizer = model.tokenizer
    return lambda texts: sum(len(e.ids) for e in tokenizer.encode_batch(texts))

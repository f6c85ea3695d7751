"""Token counts at submit time, with the `tokenizers` library alone (no torch in the core)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len")


@lru_cache(maxsize=8)
def _load(model_dir: str) -> tuple[Tokenizer, int] | None:
    path = Path(model_dir)
    tok_file, cfg_file = path / "tokenizer.json", path / "config.json"
    if not tok_file.is_file() or not cfg_file.is_file():
        return None
    config = json.loads(cfg_file.read_text())
    limits = [int(config[k]) for k in _LENGTH_KEYS if isinstance(config.get(k), int)]
    if not limits:
        return None
    tokenizer = Tokenizer.from_file(str(tok_file))
    tokenizer.no_truncation()
    return tokenizer, min(limits)


def length_checker(source: str) -> Callable[[str], str | None] | None:
    """A function that names the problem with a too-long text, or None when it cannot tell."""
    loaded = _load(source) if Path(source).is_dir() else None
    if loaded is None:
        return None
    tokenizer, limit = loaded

    def check(text: str) -> str | None:
        # Every tokenizer we know emits at most one token per byte plus a few specials, so the
        # cheap byte count settles nearly every line without tokenizing it.
        if len(text.encode("utf-8")) + 4 <= limit:
            return None
        n = len(tokenizer.encode(text).ids)
        if n <= limit:
            return None
        return (
            f"text is {n} tokens, the model accepts {limit}; "
            "shorten it or resubmit with --truncate"
        )

    return check


def context_of(source: str) -> tuple[Callable[[str], int], int] | None:
    """(a token counter, the model's context length) for a local model, or None."""
    loaded = _load(source) if Path(source).is_dir() else None
    if loaded is None:
        return None
    tokenizer, limit = loaded
    return (lambda text: len(tokenizer.encode(text).ids)), limit


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
    """A function that counts the input tokens of many texts at once, or None for a model
    without a tokenizer.json nightowl can read without torch."""
    path = Path(source) / "tokenizer.json"
    if not path.is_file():
        return None
    tokenizer = _tokenizer(str(path))

    def count(texts: list[str]) -> int:
        return sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=True))

    return count


@lru_cache(maxsize=8)
def _tokenizer(path: str) -> Tokenizer:
    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer

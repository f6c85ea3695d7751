"""The offline models: loadable like any other model, built once, and good at their toy jobs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl_workers import bootstrap
from nightowl_workers.bootstrap import (
    DEFAULT_MODELS,
    MANIFEST_NAME,
    BootstrapModel,
    bootstrap_models,
)
from nightowl_workers.loading import load_for_kind
from nightowl_workers.runners import Runner


def model_for(kind: TaskKind, tiny_models: dict[TaskKind, Path]) -> Path:
    """Every kind has its bootstrap model (embed: the sentiment BERT's encoder)."""
    return tiny_models.get(kind) or tiny_models[TaskKind.SENTIMENT]


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".bootstrap.lock"
    }


def test_builds_every_default_model_with_safetensors_and_tokenizer_json(
    tiny_models: dict[TaskKind, Path],
) -> None:
    assert {kind for _, kind in DEFAULT_MODELS} == set(tiny_models)
    for name, kind in DEFAULT_MODELS:
        path = tiny_models[kind]
        assert path.name == name
        files = {p.name for p in path.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", MANIFEST_NAME} <= files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        assert manifest["kind"] == kind.value
        for file_name, digest in manifest["files"].items():
            assert hashlib.sha256((path / file_name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("kind", list(TaskKind))
def test_models_load_through_the_safe_loader(
    kind: TaskKind, tiny_models: dict[TaskKind, Path], worker_settings: Settings
) -> None:
    model, tokenizer = load_for_kind(
        kind,
        str(model_for(kind, tiny_models)),
        revision=None,
        device=torch.device("cpu"),
        settings=worker_settings,
    )
    assert not model.training
    assert model.dtype == torch.float32
    assert tokenizer.pad_token_id is not None


def test_second_call_returns_without_rebuilding(
    tiny_models: dict[TaskKind, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_models[TaskKind.GENERATE].parent
    before = snapshot(root)

    def no_build(todo: list[BootstrapModel], seed: int, *_: object) -> None:
        raise AssertionError(f"rebuilt {[m.name for m in todo]}")

    monkeypatch.setattr(bootstrap, "_build", no_build)
    again = bootstrap_models(root)
    assert {m.kind: m.path for m in again} == tiny_models
    assert snapshot(root) == before


def test_only_incomplete_or_differently_seeded_models_are_rebuilt(
    tiny_models: dict[TaskKind, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tiny_models[TaskKind.GENERATE].parent, root)
    built: list[list[str]] = []
    monkeypatch.setattr(
        bootstrap, "_build", lambda todo, seed, *_: built.append([m.name for m in todo])
    )
    # A crash between writing the weights and the manifest leaves no manifest behind.
    (root / "tiny-translator" / MANIFEST_NAME).unlink()
    (root / "tiny-sentiment" / "model.safetensors").unlink()
    bootstrap_models(root)
    bootstrap_models(root, seed=7)
    bootstrap_models(root, force=True)
    everything = ["tiny-generator", "tiny-translator", "tiny-sentiment", "tiny-embedder"]
    assert built == [["tiny-translator", "tiny-sentiment"], everything, everything]


def test_cli_prints_one_json_line_per_model(
    tiny_models: dict[TaskKind, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tiny_models[TaskKind.GENERATE].parent
    assert bootstrap.main([str(root)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["name"], line["kind"]) for line in lines] == [
        (name, kind.value) for name, kind in DEFAULT_MODELS
    ]
    assert all(Path(line["path"]).is_dir() for line in lines)


@pytest.mark.parametrize("kind", list(TaskKind))
def test_tokenizer_json_alone_counts_what_the_model_sees(
    kind: TaskKind, tiny_models: dict[TaskKind, Path], tiny_runners: dict[TaskKind, Runner]
) -> None:
    """The core counts tokens from tokenizer.json without torch; the counts must agree."""
    texts = ["this movie was wonderful", "the red dog", "Grüße, naïve café ☕ 123", "x"]
    bare = Tokenizer.from_file(str(model_for(kind, tiny_models) / "tokenizer.json"))
    assert [len(e.ids) for e in bare.encode_batch(texts)] == tiny_runners[kind].count_tokens(texts)


def test_sentiment_model_gets_obvious_reviews_right(tiny_runners: dict[TaskKind, Runner]) -> None:
    texts = {
        "this movie was wonderful": "positive",
        "The food was terrible.": "negative",
        "I really loved this book!": "positive",
        "what a boring show": "negative",
    }
    results = tiny_runners[TaskKind.SENTIMENT].run(list(texts), {})
    assert [out["label"] for out, _, _ in results] == list(texts.values())
    assert all(out["score"] > 0.8 for out, _, _ in results)


def test_translator_translates_the_toy_language(tiny_runners: dict[TaskKind, Runner]) -> None:
    cases = {
        "the red dog": "der rote hund",
        "i see the cat": "ich sehe die katze",
        "a small house": "ein kleines haus",
        "the old man sleeps": "der alte mann schläft",
    }
    results = tiny_runners[TaskKind.TRANSLATE].run(list(cases), {})
    got = [out["translation"] for out, _, _ in results]
    # Articles and endings depend on the noun's gender: not a word-for-word copy.
    assert sum(g == want for g, want in zip(got, cases.values(), strict=True)) >= 3, got
    for translation, want in zip(got, cases.values(), strict=True):
        assert translation.split()[-1] in want


def test_generator_continues_in_the_style_it_was_trained_on(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    ((out, tokens_in, tokens_out),) = tiny_runners[TaskKind.GENERATE].run(
        ["The old man"], {"max_new_tokens": 30}
    )
    words = out["text"].split()
    assert len(words) >= 3
    assert all(w.strip(".,").isalpha() for w in words), out["text"]
    assert out["finish_reason"] in {"eos", "length"}
    assert tokens_in == 3 and tokens_out > 0

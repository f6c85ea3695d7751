"""Safe loading, device choice and the per-process model cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.common.errors import ConfigError, ModelLoadError
from nightowl_workers import cache
from nightowl_workers.device import choose_device, configure_threads, inference_dtype
from nightowl_workers.loading import check_model_source, load_for_kind

CPU = torch.device("cpu")


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Settings]:
    """An allowed model root, a directory outside it, and settings that know only the root."""
    inside, outside = tmp_path / "models", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    settings = Settings(home=tmp_path / "home", model_roots=[inside])
    return inside, outside, settings


def fake_model_dir(path: Path, *weights: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "gpt2"}')
    for name in weights:
        (path / name).write_bytes(b"\x80\x04not really a checkpoint")
    return path


# --- source checks ---------------------------------------------------------------------


def test_pickle_only_directory_is_refused(roots: tuple[Path, Path, Settings]) -> None:
    inside, _, settings = roots
    model = fake_model_dir(inside / "old-style", "pytorch_model.bin", "training_args.bin")
    with pytest.raises(ModelLoadError, match="pickle weights refused") as caught:
        load_for_kind(TaskKind.GENERATE, str(model), revision=None, device=CPU, settings=settings)
    assert "pytorch_model.bin" in str(caught.value) and "safetensors" in str(caught.value)


def test_pickle_next_to_safetensors_is_fine(roots: tuple[Path, Path, Settings]) -> None:
    inside, _, settings = roots
    model = fake_model_dir(inside / "checkpoint", "model.safetensors", "optimizer.pt")
    check_model_source(str(model), settings)


def test_path_outside_the_model_roots_is_refused(roots: tuple[Path, Path, Settings]) -> None:
    inside, outside, settings = roots
    model = fake_model_dir(outside / "stray", "model.safetensors")
    with pytest.raises(ModelLoadError, match="outside the allowed model roots") as caught:
        load_for_kind(TaskKind.SENTIMENT, str(model), revision=None, device=CPU, settings=settings)
    assert "NIGHTOWL_MODEL_ROOTS" in str(caught.value)
    # ".." that climbs out of a root is resolved before the check.
    sneaky = f"{inside}/../elsewhere/stray"
    with pytest.raises(ModelLoadError, match="outside the allowed model roots"):
        check_model_source(sneaky, settings)


def test_symlink_escaping_the_root_is_refused(roots: tuple[Path, Path, Settings]) -> None:
    inside, outside, settings = roots
    target = fake_model_dir(outside / "secret", "model.safetensors")
    link = inside / "innocent"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(ModelLoadError, match="outside the allowed model roots"):
        check_model_source(str(link), settings)
    # A link that stays inside the roots is fine.
    real = fake_model_dir(inside / "real", "model.safetensors")
    (inside / "alias").symlink_to(real, target_is_directory=True)
    check_model_source(str(inside / "alias"), settings)


def test_missing_directory_and_missing_weights_say_so(roots: tuple[Path, Path, Settings]) -> None:
    inside, _, settings = roots
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_model_source(str(inside / "nope"), settings)
    empty = fake_model_dir(inside / "empty")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors"):
        check_model_source(str(empty), settings)


def test_hub_ids_must_be_allowlisted_when_there_is_a_list(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, hub_allowlist=["acme/sentiment", "trusted/*"])
    check_model_source("acme/sentiment", settings)
    check_model_source("trusted/anything", settings)
    with pytest.raises(ModelLoadError, match="not in NIGHTOWL_HUB_ALLOWLIST"):
        check_model_source("evil/model", settings)
    with pytest.raises(ModelLoadError, match="not in NIGHTOWL_HUB_ALLOWLIST"):
        load_for_kind(
            TaskKind.SENTIMENT, "evil/model", revision=None, device=CPU, settings=settings
        )
    with pytest.raises(ModelLoadError, match="neither an existing local directory nor a hub id"):
        check_model_source("a/b/c", settings)
    # An empty list allows any id.
    check_model_source("evil/model", Settings(home=tmp_path))


def test_unreachable_hub_model_fails_fast_with_advice(tmp_path: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    settings = Settings(home=tmp_path)
    with pytest.raises(ModelLoadError, match="could not load a sentiment model") as caught:
        load_for_kind(
            TaskKind.SENTIMENT,
            "nightowl-test/not-cached",
            revision="v1",
            device=CPU,
            settings=settings,
        )
    assert "revision 'v1'" in str(caught.value) and "NIGHTOWL_MODEL_DIR" in str(caught.value)


# --- real loads --------------------------------------------------------------------------


def test_generator_is_ready_for_batched_generation(
    tiny_models: dict[TaskKind, Path], worker_settings: Settings
) -> None:
    model, tokenizer = load_for_kind(
        TaskKind.GENERATE,
        str(tiny_models[TaskKind.GENERATE]),
        revision=None,
        device=CPU,
        settings=worker_settings,
    )
    assert tokenizer.padding_side == "left" and tokenizer.truncation_side == "left"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert not model.training and model.device == CPU


def test_a_model_that_cannot_do_the_task_is_a_load_error(
    tiny_models: dict[TaskKind, Path], worker_settings: Settings
) -> None:
    with pytest.raises(ModelLoadError, match="could not load a sentiment model"):
        load_for_kind(
            TaskKind.SENTIMENT,
            str(tiny_models[TaskKind.TRANSLATE]),
            revision=None,
            device=CPU,
            settings=worker_settings,
        )


# --- device ------------------------------------------------------------------------------


def test_device_choice() -> None:
    assert choose_device("cpu") == CPU
    expected = torch.device("cuda:0") if torch.cuda.is_available() else CPU
    assert choose_device("auto") == expected
    assert inference_dtype(CPU) == torch.float32
    with pytest.raises(ConfigError, match="'cuda:57' was requested"):
        choose_device("cuda:57")
    with pytest.raises(ConfigError, match="use 'auto', 'cpu' or 'cuda:N'"):
        choose_device("tpu")


def test_configure_threads_ignores_zero() -> None:
    before = torch.get_num_threads()
    try:
        configure_threads(0)
        assert torch.get_num_threads() == before
        configure_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- cache -------------------------------------------------------------------------------


@pytest.fixture
def empty_cache() -> Iterator[None]:
    cache.clear_cache()
    yield
    cache.clear_cache()


@pytest.mark.usefixtures("empty_cache")
def test_cache_loads_once_per_version_and_evicts_least_recent(
    tiny_models: dict[TaskKind, Path], worker_settings: Settings
) -> None:
    settings = worker_settings.model_copy(update={"model_cache_size": 2})

    def get(kind: TaskKind, key: str) -> object:
        return cache.get_runner(
            kind=kind,
            version_key=key,
            source=str(tiny_models[kind]),
            revision=None,
            settings=settings,
            device=CPU,
        )

    sentiment = get(TaskKind.SENTIMENT, "sentiment@v1")
    assert get(TaskKind.SENTIMENT, "sentiment@v1") is sentiment
    get(TaskKind.TRANSLATE, "translator@v1")
    get(TaskKind.SENTIMENT, "sentiment@v1")  # now the most recent
    get(TaskKind.GENERATE, "generator@v1")
    assert cache.cached_keys() == ["sentiment@v1", "generator@v1"]
    assert get(TaskKind.SENTIMENT, "sentiment@v1") is sentiment


@pytest.mark.usefixtures("empty_cache")
def test_cache_does_not_keep_a_failed_load(worker_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        cache.get_runner(
            kind=TaskKind.SENTIMENT,
            version_key="broken@v1",
            source=str(tmp_path / "none"),
            revision=None,
            settings=worker_settings,
            device=CPU,
        )
    assert cache.cached_keys() == []

"""The tiny offline models, built once per test session and shared by the workers tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind

# A missing model must fail at once instead of waiting on a hub that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from nightowl_workers.runners import Runner


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[TaskKind, Path]:
    # Imported here so that the pure-Python tests (batching) never pay for torch.
    from nightowl_workers.bootstrap import bootstrap_models

    root = tmp_path_factory.mktemp("models")
    return {model.kind: model.path for model in bootstrap_models(root)}


@pytest.fixture(scope="session")
def worker_settings(
    tiny_models: dict[TaskKind, Path], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings whose model roots hold the tiny models (and nothing else of this machine)."""
    home = tmp_path_factory.mktemp("home")
    models_root = tiny_models[TaskKind.GENERATE].parent
    return Settings(home=home, model_roots=[models_root], hub_allowlist=[])


@pytest.fixture(scope="session")
def tiny_runners(
    tiny_models: dict[TaskKind, Path], worker_settings: Settings
) -> dict[TaskKind, Runner]:
    import torch

    from nightowl_workers.loading import load_for_kind
    from nightowl_workers.runners import make_runner

    cpu = torch.device("cpu")
    runners: dict[TaskKind, Runner] = {}
    for kind, path in tiny_models.items():
        model, tokenizer = load_for_kind(
            kind, str(path), revision=None, device=cpu, settings=worker_settings
        )
        runners[kind] = make_runner(kind, model, tokenizer, cpu)
    # Any encoder checkpoint embeds: the tiny sentiment BERT's encoder serves the embed kind.
    model, tokenizer = load_for_kind(TaskKind.EMBED, str(tiny_models[TaskKind.SENTIMENT]),
                                     revision=None, device=cpu, settings=worker_settings)
    runners[TaskKind.EMBED] = make_runner(TaskKind.EMBED, model, tokenizer, cpu)
    return runners

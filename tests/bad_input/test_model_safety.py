"""Nothing a model directory holds can run code here: pickle checkpoints are refused (the
registry and the loader both check), remote code is never trusted, and local sources must lie
under the model roots. `nightowl models add` refuses each with a message and registers
nothing (a refused `--copy` leaves nothing in the model store)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings, get_settings
from nightowl.common.enums import TaskKind
from nightowl.common.errors import ModelLoadError
from nightowl.platform.orm import ModelVersion
from nightowl_workers.loading import load_for_kind

CPU = torch.device("cpu")


class _RunsCodeOnLoad:
    """Unpickling this creates a file: the proof that a pickle was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _copy_model(models: Settings, name: str, dest: Path) -> Path:
    shutil.copytree(models.models_path / name, dest)
    return dest


def _versions(session: Session) -> int:
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(ModelVersion)) or 0
    session.commit()
    return n


# -- the loader -------------------------------------------------------------------------------


def test_a_pickle_checkpoint_is_refused_before_it_is_opened(
    models: Settings, tmp_path: Path
) -> None:
    model = _copy_model(models, "tiny-sentiment", models.models_path / "pickled")
    (model / "model.safetensors").unlink()
    marker = tmp_path / "pickle-ran"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_RunsCodeOnLoad(marker)))
    with pytest.raises(ModelLoadError, match="pickle weights refused") as caught:
        load_for_kind(TaskKind.SENTIMENT, str(model), revision=None, device=CPU,
                      settings=models)
    assert "pytorch_model.bin" in str(caught.value) and "safetensors" in str(caught.value)
    assert not marker.exists()


def test_next_to_safetensors_a_pickle_is_never_opened(models: Settings, tmp_path: Path) -> None:
    model = _copy_model(models, "tiny-sentiment", models.models_path / "both")
    marker = tmp_path / "pickle-ran"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_RunsCodeOnLoad(marker)))
    loaded, _ = load_for_kind(TaskKind.SENTIMENT, str(model), revision=None, device=CPU,
                              settings=models)
    assert loaded.config.model_type == "bert"
    assert not marker.exists()


def test_remote_code_in_a_model_directory_never_runs(models: Settings, tmp_path: Path) -> None:
    model = _copy_model(models, "tiny-sentiment", models.models_path / "remote-code")
    marker = tmp_path / "remote-code-ran"
    for module in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (model / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write({module!r})\n")
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "evil-bert"
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    tok = json.loads((model / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (model / "tokenizer_config.json").write_text(json.dumps(tok))
    with pytest.raises(ModelLoadError, match=r"asks for custom code|could not load a sentiment"):
        load_for_kind(TaskKind.SENTIMENT, str(model), revision=None, device=CPU,
                      settings=models)
    assert not marker.exists(), marker.read_text()


# -- the registry -----------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, models: Settings) -> Path:
    """A good model directory that lies outside every model root."""
    return _copy_model(models, "tiny-sentiment", tmp_path / "elsewhere" / "model")


def _add(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["models", "add", "refused", "--kind", "sentiment", *args])
    return result.exit_code, result.output


def test_models_add_refuses_a_pickle_only_directory_even_with_copy(
    models: Settings, session: Session, tmp_path: Path
) -> None:
    source = _copy_model(models, "tiny-sentiment", tmp_path / "old-style")
    (source / "model.safetensors").unlink()
    (source / "pytorch_model.bin").write_bytes(b"\x80\x04not opened")
    before = _versions(session)
    for extra in ([], ["--copy"]):
        code, out = _add("--source", str(source), *extra)
        assert code != 0
        assert "pickle weights refused" in out or "outside the allowed model roots" in out, out
    code, out = _add("--source", str(source), "--copy")
    assert f"model directory {str(source)!r} holds only pickle weights" in out, out
    assert not (models.models_path / "refused" / "v1").exists(), "the refused copy stayed"
    assert _versions(session) == before


def test_models_add_refuses_paths_that_escape_the_model_roots(
    models: Settings, session: Session, outside: Path
) -> None:
    roots = models.models_path
    link = roots / "innocent-link"
    link.symlink_to(outside, target_is_directory=True)
    before = _versions(session)
    climb = str(roots) + "/.." * len(roots.parts) + str(outside)  # starts inside a root
    for source in (str(outside),  # plainly outside
                   climb,  # `..` climbing out of a root
                   str(link)):  # a symlink planted inside a root, pointing out
        code, out = _add("--source", source)
        assert code != 0 and "outside the allowed model roots" in out, (source, out)
        assert "NIGHTOWL_MODEL_ROOTS" in out
    assert _versions(session) == before


def test_models_add_holds_hub_ids_to_the_allowlist(
    models: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _versions(session)
    monkeypatch.setenv("NIGHTOWL_HUB_ALLOWLIST", "acme/*")
    get_settings.cache_clear()
    try:
        code, out = _add("--source", "evil/model")
    finally:
        monkeypatch.delenv("NIGHTOWL_HUB_ALLOWLIST")
        get_settings.cache_clear()
    assert code != 0 and "hub model 'evil/model' is not in NIGHTOWL_HUB_ALLOWLIST" in out, out
    code, out = _add("--source", "a/b/c")
    assert code != 0 and "neither an existing local directory nor a hub id" in out, out
    code, out = _add("--source", "../../etc")
    assert code != 0, out
    assert _versions(session) == before


# -- models add --copy: checked before a byte is copied -----------------------------------------


def _store_snapshot(models: Settings) -> set[Path]:
    return set(models.models_path.rglob("*"))


def test_copy_refuses_a_folder_that_is_not_a_checkpoint(models: Settings,
                                                        session: Session) -> None:
    before, store = _versions(session), _store_snapshot(models)
    code, out = _add("--source", "/etc", "--copy")
    assert code != 0 and "nothing was copied" in out and "Traceback" not in out, out
    assert _store_snapshot(models) == store and _versions(session) == before


def test_copy_never_follows_a_symlink_out_of_the_source(models: Settings, session: Session,
                                                        tmp_path: Path) -> None:
    source = _copy_model(models, "tiny-sentiment", tmp_path / "linked")
    (source / "notes.txt").symlink_to("/etc/shadow")
    before, store = _versions(session), _store_snapshot(models)
    code, out = _add("--source", str(source), "--copy")
    assert code != 0 and "outside the source folder" in out, out
    assert _store_snapshot(models) == store and _versions(session) == before


def test_copy_checks_the_name_and_never_deletes_what_it_did_not_make(
        models: Settings, session: Session, tmp_path: Path) -> None:
    victim = models.models_path.parent / "keep-me" / "v1"
    victim.mkdir(parents=True, exist_ok=True)
    (victim / "data").write_text("precious")
    source = _copy_model(models, "tiny-sentiment", tmp_path / "ok")
    result = CliRunner().invoke(cli, ["models", "add", "x/../../keep-me", "--kind", "sentiment",
                                      "--source", str(source), "--copy"])
    assert result.exit_code != 0 and "'..'" in result.output, result.output
    # A copy whose registration fails removes its own fresh folder only.
    existing = models.models_path / "clash" / "v1"
    existing.mkdir(parents=True, exist_ok=True)
    (existing / "data").write_text("precious")
    result = CliRunner().invoke(cli, ["models", "add", "clash", "--kind", "sentiment",
                                      "--source", str(source), "--copy", "--alias", "v3"])
    assert result.exit_code != 0 and "reserved" in result.output, result.output
    assert (victim / "data").read_text() == "precious"
    assert (existing / "data").read_text() == "precious"
    assert [p.name for p in (models.models_path / "clash").iterdir()] == ["v1"]


def test_a_config_asking_for_custom_code_is_refused_at_registration(
        models: Settings, session: Session, tmp_path: Path) -> None:
    source = _copy_model(models, "tiny-sentiment", models.models_path / "auto-mapped")
    config = json.loads((source / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (source / "config.json").write_text(json.dumps(config))
    before = _versions(session)
    for extra in ([], ["--copy"]):
        code, out = _add("--source", str(source), *extra)
        assert code != 0 and "auto_map" in out, out
    assert _versions(session) == before

"""Where model weights may come from: local directories under the model roots, or allowed hub ids."""

from __future__ import annotations

import os
import re
from pathlib import Path

from nightowl.config import Settings
from nightowl.errors import ModelLoadError

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def is_local(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).exists()


def resolve_local(source: str, settings: Settings) -> Path:
    """The real path of a local model, refused unless it lies under a configured model root."""
    path = Path(os.path.realpath(Path(source).expanduser()))
    roots = [Path(os.path.realpath(r.expanduser())) for r in settings.allowed_model_roots]
    if not any(path == root or root in path.parents for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise ModelLoadError(
            f"model path {source!r} resolves to {path}, outside the model roots ({shown}); "
            "copy it under one (nightowl models add --copy) or add its parent to "
            "NIGHTOWL_MODEL_ROOTS"
        )
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist")
    files = [p.name for p in path.iterdir()]
    has_safetensors = any(name.endswith(".safetensors") for name in files)
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if not has_safetensors:
        if pickles:
            raise ModelLoadError(
                f"model directory {path} holds only pickle weights ({', '.join(pickles)}); "
                "pickle can run code on load, so it is refused: convert the checkpoint to "
                "safetensors (model.save_pretrained(dir, safe_serialization=True))"
            )
        raise ModelLoadError(f"model directory {path} has no *.safetensors weights")
    return path


def check_source(source: str, settings: Settings) -> str:
    """Validate a model source; returns the form to store (a real path, or the hub id)."""
    if is_local(source):
        return str(resolve_local(source, settings))
    if not _HUB_ID.match(source):
        raise ModelLoadError(f"model source {source!r} is neither a local directory nor a hub id")
    if settings.hub_allowlist and source not in settings.hub_allowlist:
        raise ModelLoadError(
            f"hub model {source!r} is not in NIGHTOWL_HUB_ALLOWLIST "
            f"({', '.join(settings.hub_allowlist)})"
        )
    return source

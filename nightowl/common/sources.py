"""Where model weights may come from: local dirs under the model roots, or allowed hub ids.

Torch-free, so the core checks a source when it is registered and the worker checks it again
right before loading (the worker's filesystem is the one that counts).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from nightowl.common.config import Settings
from nightowl.common.errors import ModelLoadError

# Pickle can execute code while it loads, so weights in these formats are never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_local_source(source: str) -> bool:
    """A path-looking source, or any name that exists on disk, is treated as local.

    An existing relative directory named like a hub id ("gpt2") is therefore held to the
    model-root rule instead of being read from the working directory unchecked.
    """
    return source.startswith(("/", ".", "~")) or os.path.exists(source)


def check_model_source(source: str, settings: Settings) -> None:
    """Refuse a source that must not be loaded; ModelLoadError says why and what to do."""
    if not source or not source.strip():
        raise ModelLoadError("model source is empty; give a hub id or a local directory")
    if source.startswith("s3://"):
        return  # the artifact store's: checked by sha256 when a host fetches it
    if is_local_source(source):
        _check_local_dir(source, settings)
    else:
        _check_hub_id(source, settings)


def _check_local_dir(source: str, settings: Settings) -> Path:
    # realpath resolves symlinks and "..", so a link planted inside a root cannot point out.
    resolved = Path(os.path.realpath(os.path.expanduser(source)))
    roots = [Path(os.path.realpath(root.expanduser())) for root in settings.allowed_model_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise ModelLoadError(
            f"model path {source!r} resolves to {resolved}, outside the allowed model roots "
            f"({shown}); move or copy the model under NIGHTOWL_MODEL_DIR, or add its parent "
            "directory to NIGHTOWL_MODEL_ROOTS"
        )
    if not resolved.exists():
        raise ModelLoadError(
            f"model directory {source!r} does not exist on this worker ({resolved}); check "
            "the path, or build the offline models with nightowl_workers.bootstrap.bootstrap_models"
        )
    if not resolved.is_dir():
        raise ModelLoadError(
            f"model path {source!r} is a file; give the directory that holds config.json"
        )
    check_no_custom_code(resolved)
    names = [entry.name for entry in resolved.iterdir() if entry.is_file()]
    has_safetensors = any(name.endswith(".safetensors") for name in names)
    pickles = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
    if pickles and not has_safetensors:
        raise ModelLoadError(
            f"model directory {source!r} holds only pickle weights ({', '.join(pickles)}): "
            "pickle weights refused, because loading them can run arbitrary code. Convert "
            "them to safetensors on a trusted machine (AutoModel.from_pretrained(dir, "
            "use_safetensors=False).save_pretrained(new_dir)) and point nightowl at new_dir"
        )
    if not has_safetensors:
        raise ModelLoadError(
            f"model directory {source!r} has no *.safetensors weights; write the model there "
            "with save_pretrained(), which saves safetensors"
        )
    return resolved


def check_no_custom_code(folder: Path) -> None:
    """A config that maps Auto classes to the checkpoint's own Python (`auto_map`) would need
    trust_remote_code, which nightowl never sets: refuse it when registered, not when loaded."""
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path} is not readable JSON ({e}); fix or remove it") from e
        if isinstance(data, dict) and ("auto_map" in data or "custom_pipelines" in data):
            raise ModelLoadError(
                f"{path} asks for custom code (auto_map): nightowl never runs code shipped "
                "with a checkpoint; save the model with a stock transformers class instead")


def _check_hub_id(source: str, settings: Settings) -> None:
    if not _HUB_ID.match(source) or ".." in source:
        raise ModelLoadError(
            f"model source {source!r} is neither an existing local directory nor a hub id "
            "like 'org/name'; check the spelling or the path"
        )
    allowlist = settings.hub_allowlist
    if allowlist and not any(_allowed(source, entry) for entry in allowlist):
        raise ModelLoadError(
            f"hub model {source!r} is not in NIGHTOWL_HUB_ALLOWLIST ({', '.join(allowlist)}); "
            "add it there (or 'org/*' for a whole organisation), or use a local directory"
        )


def _allowed(source: str, entry: str) -> bool:
    if entry.endswith("/*"):
        return source.startswith(entry[:-1])
    return source == entry


def check_source(source: str, settings: Settings) -> str:
    """Validate a model source; returns the form to store (the real path, or the hub id)."""
    check_model_source(source, settings)
    if is_local_source(source):
        return str(Path(os.path.realpath(os.path.expanduser(source))))
    return source

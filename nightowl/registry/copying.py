"""`nightowl models add --copy`: bring a local checkpoint into the model store, safely.

Everything is checked before a byte is copied (name, source, weights format, custom code);
symlinks are never followed out of the source; the only folder ever removed on failure is the
fresh one this copy created.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from nightowl.common.errors import InvalidInput, ModelLoadError
from nightowl.common.sources import PICKLE_SUFFIXES, check_no_custom_code
from nightowl.registry.versions import ModelRef

# A checkpoint is a handful of files; a source with thousands is a mistake (`--source /etc`).
MAX_FILES = 200


def check_model_name(name: str) -> None:
    ModelRef.parse(name)
    parts = name.split("/")
    if "@" in name or any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"model name {name!r} must be letters, digits and . _ - with single "
                           "'/' between words, no '@' and no '..'", param="name")


def _plan(source: Path) -> list[tuple[Path, Path]]:
    """(file to read, path relative to the source) for every file to copy; refuses links
    that leave the source, special files and sources that are not a checkpoint."""
    root = Path(os.path.realpath(source))
    files: list[tuple[Path, Path]] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        for d in list(dirs):
            if (here / d).is_symlink():
                raise ModelLoadError(f"{here / d} is a symlinked folder; copy refuses links "
                                     "(replace it with the folder itself)")
        for name in names:
            path = here / name
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(root):
                raise ModelLoadError(f"{path} links to {real}, outside the source folder; "
                                     "nothing was copied")
            if not real.is_file():
                raise ModelLoadError(f"{path} is not a regular file; nothing was copied")
            files.append((real, path.relative_to(root)))
            if len(files) > MAX_FILES:
                raise ModelLoadError(f"{source} holds more than {MAX_FILES} files: it does not "
                                     "look like a model checkpoint; nothing was copied")
    top = {rel.name for _, rel in files if len(rel.parts) == 1}
    if "config.json" not in top:
        raise ModelLoadError(f"{source} has no config.json: not a model folder saved with "
                             "save_pretrained(); nothing was copied")
    if not any(n.endswith(".safetensors") for n in top):
        pickles = sorted(n for n in top if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelLoadError(
                f"model directory {str(source)!r} holds only pickle weights "
                f"({', '.join(pickles)}): pickle weights refused, because loading them can run "
                "arbitrary code; convert them to safetensors; nothing was copied")
        raise ModelLoadError(f"{source} has no *.safetensors weights; save the model with "
                             "save_pretrained(), which writes safetensors; nothing was copied")
    return files


def copy_into_store(source: str, *, name: str, models_path: Path) -> Path:
    """Copy a checked checkpoint to a new folder under the store; returns that folder."""
    check_model_name(name)
    src = Path(os.path.expanduser(source))
    if not src.is_dir():
        raise InvalidInput(f"--source {source!r} is not a directory", param="source")
    check_no_custom_code(src)
    files = _plan(src)
    store = Path(os.path.realpath(models_path))
    parent = store / name
    parent.mkdir(parents=True, exist_ok=True)
    if not Path(os.path.realpath(parent)).is_relative_to(store):
        raise InvalidInput(f"model name {name!r} leads outside the model store", param="name")
    # A fresh folder name: an existing one (another copy, a leftover) is never overwritten.
    target = parent / f"copy-{uuid.uuid4().hex[:12]}"
    target.mkdir(mode=0o700)
    try:
        for real, rel in files:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real, dest, follow_symlinks=False)
        check_no_custom_code(target)  # the copy is what gets loaded, so it is what counts
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


"""Each host's copy of store artifacts, keyed by content hash (NIGHTOWL_CACHE_DIR).

- Atomic fill: a download goes to a temp folder, is checked file by file against its
  manifest, then renamed into place; a reader never sees half an entry.
- One download per host: processes asking for the same hash at once queue on a file lock,
  and the ones that wait find the entry filled.
- A hit costs a few stat calls: the sizes and mtimes recorded at fill are compared; a copy
  changed since (truncated, rewritten) is hashed again and fetched again if it no longer
  matches.
- Size cap: after a fill, the least recently used entries go until the total fits
  (NIGHTOWL_CACHE_MAX_BYTES); an entry another process is filling or evicting is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from nightowl.common.config import Settings
from nightowl.common.errors import ArtifactError
from nightowl.storage.artifacts import MANIFEST, fetch_dir, get_store, is_store_uri, sha256_file

STAMP = ".nightowl-entry.json"


def local_dir(source: str, sha256: str | None, settings: Settings) -> str:
    """A model source a loader can open: store URIs become this host's cached copy."""
    if not is_store_uri(source):
        return source
    if not sha256:
        raise ArtifactError(f"{source} has no sha256 in the registry; register it again")
    return str(ensure(source, sha256, settings))


def ensure(uri: str, sha256: str, settings: Settings) -> Path:
    """The cached directory for a published artifact, downloading it once if needed."""
    root = settings.cache_path
    entry = root / sha256
    if _valid(entry, sha256):
        _touch(entry)
        return entry
    with _locked(root, sha256):
        if _valid(entry, sha256):  # another process filled it while we waited
            _touch(entry)
            return entry
        store = get_store(settings)
        tmp = root / "tmp" / f"{sha256}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            raw = fetch_dir(store, store.key_of(uri), tmp)
            if hashlib.sha256(raw).hexdigest() != sha256:
                raise ArtifactError(f"{uri} holds other content than its sha256 {sha256} "
                                    "in the registry; it was overwritten in the store")
            _stamp(tmp)
            shutil.rmtree(entry, ignore_errors=True)
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    evict(settings, keep=sha256)
    return entry


def _stamp(folder: Path) -> None:
    files = {str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns]
             for p in folder.rglob("*") if p.is_file() and p.name != STAMP}
    (folder / STAMP).write_text(json.dumps(files))


def _valid(entry: Path, sha256: str) -> bool:
    try:
        recorded = json.loads((entry / STAMP).read_text())
    except (OSError, ValueError):
        return False
    changed = False
    for rel, (size, mtime) in recorded.items():
        try:
            st = (entry / rel).stat()
        except OSError:
            return False
        if st.st_size != size:
            return False
        changed = changed or st.st_mtime_ns != mtime
    if changed:
        return _rehash(entry, sha256)
    return True


def _rehash(entry: Path, sha256: str) -> bool:
    """Touched since the fill: trust it only if every file still matches the manifest."""
    try:
        raw = (entry / MANIFEST).read_bytes()
        files = json.loads(raw)["files"]
    except (OSError, ValueError, KeyError):
        return False
    if hashlib.sha256(raw).hexdigest() != sha256:
        return False
    if any(sha256_file(entry / rel) != meta["sha256"] for rel, meta in files.items()):
        return False
    _stamp(entry)
    return True


def _touch(entry: Path) -> None:
    # The stamp's mtime is the entry's last use, for LRU eviction.
    with suppress(OSError):
        os.utime(entry / STAMP)


@contextmanager
def _locked(root: Path, sha256: str, *, wait: bool = True) -> Iterator[bool]:
    locks = root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{sha256}.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def entries(settings: Settings) -> list[tuple[float, int, Path]]:
    """(last use, bytes, path) of every complete entry, least recently used first."""
    root = settings.cache_path
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        stamp = entry / STAMP
        if entry.name in ("tmp", "locks") or not stamp.is_file():
            continue
        size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
        found.append((stamp.stat().st_mtime, size, entry))
    return sorted(found)


def evict(settings: Settings, *, keep: str | None = None) -> list[Path]:
    """Remove least recently used entries until the cache fits its cap."""
    found = entries(settings)
    total = sum(size for _, size, _ in found)
    removed = []
    for _, size, entry in found:
        if total <= settings.cache_max_bytes:
            break
        if entry.name == keep:
            continue
        with _locked(settings.cache_path, entry.name, wait=False) as got:
            if not got:
                continue
            # Renamed first so a reader never opens a folder that is half deleted.
            doomed = entry.with_name(f"{entry.name}.evicted.{time.monotonic_ns()}")
            entry.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        total -= size
        removed.append(entry)
    return removed

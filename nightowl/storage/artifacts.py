"""The artifact store: what a second host needs, behind NIGHTOWL_ARTIFACT_URL.

A local folder (the default, the home's `artifacts/`) or `s3://bucket/prefix` on any
S3-compatible store. S3 goes through boto3: it is the SDK AWS keeps, it reads credentials
the standard way (environment, profile, instance role) with no code of ours, takes an
`endpoint_url` for MinIO, Ceph, R2 or moto, and its transfer manager streams large files in
parts. SQL keeps each artifact's URI and sha256; hosts read them through nightowl.storage.cache.

A directory (a model version, a checkpoint) is stored as its files plus a MANIFEST.json of
every file's size and sha256, written last: its sha256 names the directory's content, and a
reader that finds no manifest knows the upload did not finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from nightowl.common.config import Settings
from nightowl.common.errors import ArtifactError

MANIFEST = "MANIFEST.json"
BLOCK = 1 << 20


class Store(Protocol):
    url: str
    # True when other hosts read it (S3); a local folder is this host's alone.
    shared: bool

    def uri(self, key: str) -> str: ...
    def key_of(self, uri: str) -> str: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_file(self, key: str, dest: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def open(self, key: str) -> IO[bytes]: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...


class LocalStore:
    shared = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ArtifactError(f"artifact key {key!r} leaves the store at {self.root}")
        return path

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def key_of(self, uri: str) -> str:
        path = Path(uri.removeprefix("file://"))
        return str(path.resolve().relative_to(self.root.resolve()))

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)

    def get_file(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError as e:
            raise ArtifactError(f"artifact {self.uri(key)} does not exist") from e

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise ArtifactError(f"artifact {self.uri(key)} does not exist") from e

    def open(self, key: str) -> IO[bytes]:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as e:
            raise ArtifactError(f"artifact {self.uri(key)} does not exist") from e

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        root = self.root.resolve()
        return sorted(str(p.relative_to(root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.endswith(".tmp"))

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_file():
            path.unlink()
        shutil.rmtree(path, ignore_errors=True)


class S3Store:
    shared = True

    def __init__(self, url: str, endpoint_url: str | None) -> None:
        self.url = url.rstrip("/")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self._local = threading.local()

    @property
    def client(self) -> Any:
        # boto3 clients are not safe to share across a fork; one per process and thread.
        cached = getattr(self._local, "client", None)
        if cached is None or cached[0] != os.getpid():
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url,
                config=Config(retries={"max_attempts": 5, "mode": "standard"},
                              connect_timeout=5, read_timeout=60))
            cached = self._local.client = (os.getpid(), client)
        return cached[1]

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def key_of(self, uri: str) -> str:
        base = f"s3://{self.bucket}/" + (f"{self.prefix}/" if self.prefix else "")
        if not uri.startswith(base):
            raise ArtifactError(f"{uri} is not in the artifact store {self.url}")
        return uri[len(base):]

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtifactError(f"artifact {what} does not exist in {self.url}") from e
            raise ArtifactError(f"artifact store {self.url} refused {what}: {e}; check "
                                "NIGHTOWL_S3_ENDPOINT_URL and the AWS credentials") from e
        except BotoCoreError as e:
            raise ArtifactError(f"artifact store {self.url} unreachable for {what}: {e}; "
                                "check NIGHTOWL_S3_ENDPOINT_URL and the AWS credentials") from e

    def put_file(self, key: str, path: Path) -> None:
        self._call(key, self.client.upload_file, str(path), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(key, self.client.put_object, Bucket=self.bucket, Key=self._key(key),
                   Body=data)

    def get_file(self, key: str, dest: Path) -> None:
        self._call(key, self.client.download_file, self.bucket, self._key(key), str(dest))

    def get_bytes(self, key: str) -> bytes:
        body = self._call(key, self.client.get_object, Bucket=self.bucket,
                          Key=self._key(key))["Body"]
        data: bytes = body.read()
        return data

    def open(self, key: str) -> IO[bytes]:
        body: IO[bytes] = self._call(key, self.client.get_object, Bucket=self.bucket,
                                     Key=self._key(key))["Body"]
        return body

    def list(self, prefix: str) -> list[str]:
        """Keys under the folder `prefix`, or `prefix` itself if it is one object."""
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix).rstrip("/")
        cut = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        pages = self._call(prefix, lambda: list(paginator.paginate(Bucket=self.bucket,
                                                                  Prefix=full)))
        for page in pages:
            keys.extend(obj["Key"][cut:] for obj in page.get("Contents", [])
                        if obj["Key"] == full or obj["Key"].startswith(full + "/"))
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            objects = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            self._call(prefix, self.client.delete_objects, Bucket=self.bucket,
                       Delete={"Objects": objects, "Quiet": True})


def get_store(settings: Settings) -> Store:
    return _store(settings.artifact_url, settings.s3_endpoint_url, str(settings.artifacts_path))


@lru_cache(maxsize=8)
def _store(url: str, endpoint: str, default_root: str) -> Store:
    if url.startswith("s3://"):
        return S3Store(url, endpoint)
    root = Path(url.removeprefix("file://") if url else default_root).expanduser()
    return LocalStore(root)


def is_store_uri(source: str) -> bool:
    return source.startswith("s3://")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(folder: Path) -> bytes:
    """Every file's relative path, size and sha256, as canonical JSON (its hash names the dir)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if rel != MANIFEST:
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return json.dumps({"files": files}, sort_keys=True, separators=(",", ":")).encode()


def publish_dir(store: Store, key: str, folder: Path) -> tuple[str, str]:
    """Upload a directory, manifest last; returns (uri, sha256 of the manifest)."""
    manifest = manifest_of(folder)
    for rel in json.loads(manifest)["files"]:
        store.put_file(f"{key}/{rel}", folder / rel)
    store.put_bytes(f"{key}/{MANIFEST}", manifest)
    return store.uri(key), hashlib.sha256(manifest).hexdigest()


def publish_model(settings: Settings, folder: Path) -> tuple[str, str]:
    """A model directory into the store, named by its content: the same weights published
    twice (bootstrap on two hosts) are one artifact and one URI."""
    manifest = manifest_of(folder)
    digest = hashlib.sha256(manifest).hexdigest()
    store = get_store(settings)
    uri, published = publish_dir(store, f"models/{digest}", folder)
    if published != digest:
        raise ArtifactError(f"{folder} changed while it was being published; publish it again")
    return uri, digest


def fetch_dir(store: Store, key: str, dest: Path) -> bytes:
    """Download a published directory into dest, checking every file against its manifest;
    returns the manifest's bytes (their sha256 is the directory's)."""
    raw = store.get_bytes(f"{key}/{MANIFEST}")
    manifest = json.loads(raw)
    root = dest.resolve()
    targets = {}
    # Every entry is resolved and refused before any byte is written: a manifest naming
    # `../../x` (whoever could write the bucket) must not write outside the cache.
    for rel in manifest["files"]:
        target = (dest / rel).resolve() if isinstance(rel, str) and rel else root
        if PurePosixPath(str(rel)).is_absolute() or root not in target.parents:
            raise ArtifactError(f"{store.uri(key)}/{MANIFEST} names {str(rel)[:200]!r}, which "
                                "is outside the directory; refusing the whole entry")
        targets[rel] = target
    for rel, meta in manifest["files"].items():
        target = targets[rel]
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(f"{key}/{rel}", target)
        if sha256_file(target) != meta["sha256"]:
            raise ArtifactError(f"{store.uri(key)}/{rel} does not match its manifest's sha256")
    (dest / MANIFEST).write_bytes(raw)
    return raw


def shareable_source(settings: Settings, source: str) -> tuple[str, str | None]:
    """What to register for a checked source: with a shared store, a local directory is
    published and its URI and sha256 registered, since other hosts cannot read this disk."""
    store = get_store(settings)
    if not store.shared or is_store_uri(source) or not Path(source).is_dir():
        return source, None
    return publish_model(settings, Path(source))

"""The artifact store on a real S3 server and each host's content-addressed cache."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from pathlib import Path

import pytest
from s3_server import store_settings

from nightowl.common.config import Settings
from nightowl.common.errors import ArtifactError
from nightowl.storage import cache as artifact_cache
from nightowl.storage.artifacts import get_store, publish_model, shareable_source


def _model_dir(path: Path, seed: int, size: int = 300_000) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"seed": seed}))
    (path / "model.safetensors").write_bytes(hashlib.sha256(str(seed).encode()).digest()
                                             * (size // 32))
    (path / "tokenizer").mkdir()
    (path / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return path


def _gets(log: Path, bucket_url: str, name: str) -> int:
    """GET requests the S3 server logged for one file of this test's bucket."""
    bucket = bucket_url[5:].split("/")[0]
    pattern = re.compile(rf'"GET /{bucket}/\S*/{re.escape(name)}\S* HTTP')
    return sum(1 for line in log.read_text().splitlines() if pattern.search(line))


def test_a_model_published_on_one_host_loads_on_another_from_its_cache(
        tmp_path: Path, bucket_url: str, s3_endpoint: str) -> None:
    a = store_settings(tmp_path / "a", bucket_url, s3_endpoint)
    b = store_settings(tmp_path / "b", bucket_url, s3_endpoint)
    src = _model_dir(tmp_path / "src", 1)
    uri, sha = shareable_source(a, str(src))
    assert uri.startswith(bucket_url + "/models/") and len(sha) == 64
    # Published twice (a second host's bootstrap): the same content is the same artifact.
    assert shareable_source(a, str(src)) == (uri, sha)

    local = Path(artifact_cache.local_dir(uri, sha, b))
    assert local.parent == b.cache_path
    for rel in ("config.json", "model.safetensors", "tokenizer/vocab.txt"):
        assert (local / rel).read_bytes() == (src / rel).read_bytes()
    # A hit reads nothing from the store: with the store's copy gone, it still serves.
    get_store(b).delete_prefix(get_store(b).key_of(uri))
    assert artifact_cache.local_dir(uri, sha, b) == str(local)


@pytest.mark.parametrize("damage", ["truncated", "same_size_rewrite", "file_removed"])
def test_a_damaged_cached_copy_is_detected_and_fetched_again(
        tmp_path: Path, bucket_url: str, s3_endpoint: str, damage: str) -> None:
    s = store_settings(tmp_path / "h", bucket_url, s3_endpoint)
    src = _model_dir(tmp_path / "src", 2)
    uri, sha = publish_model(s, src)
    local = artifact_cache.ensure(uri, sha, s)
    weights = local / "model.safetensors"
    good = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(good[: len(good) // 2])
    elif damage == "same_size_rewrite":
        weights.write_bytes(bytes(len(good)))
    else:
        weights.unlink()
    again = artifact_cache.ensure(uri, sha, s)
    assert (again / "model.safetensors").read_bytes() == good


def test_an_artifact_overwritten_in_the_store_is_refused(
        tmp_path: Path, bucket_url: str, s3_endpoint: str) -> None:
    s = store_settings(tmp_path / "h", bucket_url, s3_endpoint)
    uri, sha = publish_model(s, _model_dir(tmp_path / "src", 3))
    store = get_store(s)
    store.put_bytes(f"{store.key_of(uri)}/MANIFEST.json", b'{"files":{}}')
    with pytest.raises(ArtifactError, match="other content than its sha256"):
        artifact_cache.ensure(uri, sha, s)
    assert not (s.cache_path / sha).exists()


def test_a_manifest_naming_a_path_outside_the_cache_writes_nothing_there(
        tmp_path: Path, bucket_url: str, s3_endpoint: str) -> None:
    s = store_settings(tmp_path / "h", bucket_url, s3_endpoint)
    uri, sha = publish_model(s, _model_dir(tmp_path / "src", 4))
    store = get_store(s)
    key = store.key_of(uri)
    escape = "../../../../escaped.txt"
    store.put_bytes(f"{key}/{escape}", b"planted")
    store.put_bytes(f"{key}/MANIFEST.json", json.dumps(
        {"files": {escape: {"sha256": hashlib.sha256(b"planted").hexdigest()}}}).encode())
    with pytest.raises(ArtifactError, match="outside the directory"):
        artifact_cache.ensure(uri, sha, s)
    assert not list(tmp_path.rglob("escaped.txt"))


def _ensure_in_child(uri: str, sha: str, settings: Settings, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    artifact_cache.ensure(uri, sha, settings)


def test_processes_asking_at_once_download_once(
        tmp_path: Path, bucket_url: str, s3_endpoint: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    s = store_settings(tmp_path / "h", bucket_url, s3_endpoint)
    uri, sha = publish_model(s, _model_dir(tmp_path / "src", 4, size=3_000_000))
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_ensure_in_child, args=(uri, sha, s, start)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = next(tmp_path_factory.getbasetemp().glob("s3*/moto.log"))
    assert _gets(log, bucket_url, "model.safetensors") == 1
    assert sorted(p.name for p in (s.cache_path / "tmp").iterdir()) == []


def test_the_cache_keeps_to_its_cap_evicting_the_least_recently_used(
        tmp_path: Path, bucket_url: str, s3_endpoint: str) -> None:
    # Each model is ~1 MiB; the cap holds two.
    s = store_settings(tmp_path / "h", bucket_url, s3_endpoint, cache_max_bytes=2_300_000)
    published = [publish_model(s, _model_dir(tmp_path / f"m{i}", 10 + i, size=1_048_576))
                 for i in range(3)]
    first = artifact_cache.ensure(*published[0], s)
    artifact_cache.ensure(*published[1], s)
    os.utime(first / artifact_cache.STAMP, (1e9 + 10, 1e9 + 10))  # used long ago...
    os.utime(s.cache_path / published[1][1] / artifact_cache.STAMP, (1e9, 1e9))  # ...this longer
    artifact_cache.ensure(*published[0], s)  # a hit marks it used now
    artifact_cache.ensure(*published[2], s)
    kept = {p.name for _, _, p in artifact_cache.entries(s)}
    assert kept == {published[0][1], published[2][1]}
    assert sum(size for _, size, _ in artifact_cache.entries(s)) <= s.cache_max_bytes


def test_without_a_store_a_local_model_is_registered_where_it_is(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    src = _model_dir(tmp_path / "models" / "m", 5)
    assert shareable_source(s, str(src)) == (str(src), None)
    assert artifact_cache.local_dir(str(src), None, s) == str(src)


def test_a_bad_artifact_url_is_refused_with_what_to_write(tmp_path: Path) -> None:
    from nightowl.common.config import load_settings
    from nightowl.common.errors import ConfigError

    os.environ["NIGHTOWL_ARTIFACT_URL"] = "gs://bucket"
    try:
        with pytest.raises(ConfigError, match="s3://bucket/prefix"):
            load_settings()
    finally:
        del os.environ["NIGHTOWL_ARTIFACT_URL"]


def test_an_unreachable_store_says_what_to_check(tmp_path: Path, s3_endpoint: str) -> None:
    s = store_settings(tmp_path / "h", "s3://nobucket-here/x", "http://127.0.0.1:9")
    with pytest.raises(ArtifactError, match="NIGHTOWL_S3_ENDPOINT_URL"):
        publish_model(s, _model_dir(tmp_path / "src", 6))


def test_an_uploaded_file_is_read_on_another_host_from_the_store(
        tmp_path: Path, bucket_url: str, s3_endpoint: str, migrated: Settings) -> None:
    import io

    from sqlalchemy.orm import Session

    from nightowl.platform.db import make_engine
    from nightowl.storage import files

    a = store_settings(tmp_path / "a", bucket_url, s3_endpoint)
    b = store_settings(tmp_path / "b", bucket_url, s3_endpoint)
    body = b"".join(b'{"custom_id": "r%d", "text": "fine"}\n' % i for i in range(5000))
    engine = make_engine(migrated.sqlalchemy_url)
    with Session(engine) as session:
        row = files.create_file(session, a, stream=io.BytesIO(body), filename="in.jsonl",
                                purpose="batch")
        session.rollback()
    engine.dispose()
    assert row.path == f"{bucket_url}/files/{row.id}"
    assert files.local_path(row, a) == a.home / "files" / row.id  # the uploader's own copy
    on_b = files.local_path(row, b)
    assert on_b.read_bytes() == body and on_b.is_relative_to(b.cache_path)
    out = io.BytesIO()
    files.copy_to(row, out, b)
    assert out.getvalue() == body
    get_store(a).delete_prefix(f"files/{row.id}")
    assert get_store(a).list("files") == []

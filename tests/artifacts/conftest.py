"""An S3 server per session (moto's, on 127.0.0.1) and settings that point a home at it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from s3_server import CREDENTIALS, make_bucket, s3_server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as url:
        yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def bucket_url(s3_endpoint: str) -> str:
    """A fresh bucket (and a prefix, as in production) for one test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    make_bucket(s3_endpoint, name)
    return f"s3://{name}/nightowl"

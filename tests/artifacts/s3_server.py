"""A real S3 server on 127.0.0.1 for tests and benchmarks: moto's standalone server
(`python -m moto.server`, from the `moto[server]` dev dependency) as a child process, spoken
to over HTTP by boto3 exactly as AWS S3 or MinIO would be. Nothing is mocked in-process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nightowl.common.config import Settings

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "nightowl-test", "AWS_SECRET_ACCESS_KEY": "nightowl-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_server(log: Path) -> Iterator[str]:
    """Start the server, yield its endpoint URL, stop it (its whole process group)."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto.server did not start: {log.read_text()}") from e
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def store_settings(home: Path, url: str, endpoint: str, **extra: Any) -> Settings:
    """Settings of one "host": its own home, the shared store."""
    return Settings(home=home, artifact_url=url, s3_endpoint_url=endpoint, **extra)


def make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.session.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"]).client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)

"""The gate in front of routing, against a real API process: no body is read before the key is
checked, a body over the limit is refused with 413 while it streams, keys never reach the
access log, the dashboard login needs its CSRF token, and answers carry CSP / X-Frame-Options."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from helpers import api_process
from nightowl.common.config import Settings

LIMIT, UPLOAD_LIMIT = 4096, 8192


@pytest.fixture(scope="module")
def small_api(migrated: Settings, stack_env: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("guard") / "api.log"
    env = {**stack_env, "NIGHTOWL_MAX_BODY_BYTES": str(LIMIT),
           "NIGHTOWL_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}
    with api_process(env, log, ("--access-log",)) as url:
        yield url, log


def _raw(url: str, head: str, timeout: float = 5.0) -> tuple[int, str]:
    """Send only the request head (a body is promised but never sent): an answer that comes
    anyway proves the server decided without reading the body."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        started = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - started < timeout
    status = int(data.split(b" ", 2)[1])
    return status, data.decode("latin-1")


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head.lower())
    return length is None or len(body) >= int(length.group(1))


def test_no_body_is_read_before_the_key_is_checked(small_api: tuple[str, Path],
                                                    migrated: Settings) -> None:
    url, _ = small_api
    uploads = migrated.home / "files"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    for path, ctype in (("/v1/jobs", "application/json"),
                        ("/v1/files", "multipart/form-data; boundary=x")):
        status, text = _raw(url, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                                 f"Content-Length: 600000000\r\n\r\n")
        assert status == 401, text
        assert "x-frame-options: deny" in text.lower()
        assert "x-request-id: req_" in text.lower()  # what a user quotes, on a 401 too
    after = set(uploads.iterdir()) if uploads.exists() else set()
    assert after == before  # nothing was spooled


def test_a_body_over_the_limit_gets_413_before_it_is_read(
        small_api: tuple[str, Path], make_api_key: Callable[[str], str]) -> None:
    url, _ = small_api
    key = make_api_key("guard-tenant")
    status, text = _raw(url, f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}"
                             f"\r\nContent-Type: application/json\r\nContent-Length: "
                             f"{LIMIT + 1}\r\n\r\n")
    assert status == 413 and "limit" in text, text
    # Without a Content-Length (chunked), the count is kept while the body streams.
    def chunks() -> Iterator[bytes]:
        yield b'{"kind": "generate", "model": "x", "items": ['
        for _ in range(100):
            yield b'{"text": "' + b"a" * 100 + b'"},'
        yield b"{}]}"
    response = httpx.post(f"{url}/v1/jobs", content=chunks(), timeout=10,
                          headers={"Authorization": f"Bearer {key}",
                                   "Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    assert response.headers["x-request-id"].startswith("req_")
    big = httpx.post(f"{url}/v1/files", headers={"Authorization": f"Bearer {key}"},
                     files={"file": ("a.jsonl", b"x" * (UPLOAD_LIMIT + 100_000))},
                     data={"purpose": "batch"}, timeout=10)
    assert big.status_code == 413, big.text
    small = httpx.post(f"{url}/v1/files", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "batch"})
    assert small.status_code == 200, small.text


def test_keys_stay_out_of_the_log_and_login_needs_the_csrf_token(
        small_api: tuple[str, Path], make_api_key: Callable[[str], str]) -> None:
    url, log = small_api
    key = make_api_key("guard-login")
    old = httpx.get(f"{url}/?key={key}", follow_redirects=False)
    assert old.status_code == 303 and "set-cookie" not in old.headers
    assert key not in old.headers["location"]
    # An API route ignores a key in the URL (only the header counts) and never logs it.
    pasted = httpx.get(f"{url}/v1/jobs?limit=1&key={key}",
                       headers={"Authorization": f"Bearer {key}"})
    assert pasted.status_code == 200, pasted.text
    with httpx.Client(base_url=url, follow_redirects=False) as browser:
        # A cross-site form post has no token: no session is set up.
        forged = browser.post("/ui/login", data={"key": key, "next": "/"})
        assert forged.status_code == 303 and "nightowl_session" not in forged.headers.get(
            "set-cookie", "")
        page = browser.get("/ui/login")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        wrong = browser.post("/ui/login", data={"key": "nk-wrong", "next": "/",
                                                "csrf": token.group(1)})
        assert "refused=1" in wrong.headers["location"]
        page = browser.get("/ui/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        ok = browser.post("/ui/login", data={"key": key, "next": "/",
                                             "csrf": token.group(1)})
        # The cookie holds a session id: the key itself never reaches the browser's storage.
        assert ok.status_code == 303 and "nightowl_session" in ok.headers["set-cookie"]
        assert key not in ok.headers["set-cookie"]
        home = browser.get("/")
        assert home.status_code == 200
        # Logout is a POST with the page's token: a GET or a forged post leaves it logged in.
        assert browser.get("/ui/logout").status_code == 405
        assert browser.post("/ui/logout", data={"csrf": "forged"}).status_code == 303
        assert browser.get("/").status_code == 200
        logout = re.search(r'name="csrf" value="([^"]+)"', home.text)
        assert logout is not None
        out = browser.post("/ui/logout", data={"csrf": logout.group(1)})
        assert out.headers["location"] == "/ui/login"
        assert browser.get("/").status_code == 303  # the session is gone, not just the cookie
    # The access log's other spellings of a key in the URL: %-escaped name, a leading space.
    for query in (f"k%65y={key}", f"key=+{key}", f"KEY={key}"):
        assert httpx.get(f"{url}/v1/jobs?limit=2&{query}",
                         headers={"Authorization": f"Bearer {key}"}).status_code == 200
    time.sleep(0.5)
    logged = log.read_text(errors="replace")
    assert "GET /? HTTP" in logged or "GET / HTTP" in logged  # the request was logged...
    assert "GET /v1/jobs?limit=1 HTTP" in logged
    assert key not in logged  # ...without its key

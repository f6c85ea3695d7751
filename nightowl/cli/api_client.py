"""A small HTTP client for the nightowl API: every failure becomes one clear ClickException
(an unreachable server, a wrong key, a refusal with its problems), never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import httpx


class ApiClient:
    def __init__(self, url: str, key: str | None) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        # Built on first use: `nightowl --api URL jobs --help` needs no key and no connection.
        if self._http is None:
            import httpx

            if not self.key:
                raise click.UsageError("--api needs --key KEY (or NIGHTOWL_API_KEY); create one "
                                       "with `nightowl keys create TENANT` on the server")
            self._http = httpx.Client(base_url=self.url,
                                      timeout=httpx.Timeout(60.0, connect=10.0),
                                      headers={"Authorization": f"Bearer {self.key}"})
        return self._http

    def unreachable(self, error: Exception) -> click.ClickException:
        reason = " ".join(str(error).split()) or type(error).__name__
        return click.ClickException(
            f"cannot reach the nightowl API at {self.url} ({reason}); check --api / "
            "NIGHTOWL_API_URL and that the API runs there (`nightowl api` or `nightowl up`)")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; its JSON body (None for an empty answer such as 204)."""
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise self.unreachable(e) from e
        check(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise click.ClickException(
                f"{self.url} answered {method} {path} with something other than JSON; is "
                "--api the address of a nightowl API?") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)

    def upload(self, *, stream: Any, filename: str, purpose: str) -> str:
        """POST /v1/files; the new file's id."""
        uploaded = self.call("POST", "/v1/files", data={"purpose": purpose},
                             files={"file": (filename, stream, "application/jsonl")})
        file_id: str = uploaded["id"]
        return file_id

    def jsonl(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """A JSONL answer, line by line as it streams in."""
        import httpx

        params = {k: v for k, v in params.items() if v is not None}
        try:
            with self.http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    check(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise self.unreachable(e) from e


def check(response: Any) -> None:
    """A 4xx/5xx answer as the API's own message, with the first problems it names."""
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {"message": response.text[:500]}
    lines = [f"{response.status_code}: {error.get('message', 'request failed')}"]
    lines += [f"  {p['where']}: {p['message']}" for p in (error.get("problems") or [])[:50]
              if isinstance(p, dict) and "where" in p]
    raise click.ClickException("\n".join(lines))

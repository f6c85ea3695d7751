"""Every operation in /openapi.json, every path and query parameter and every body field, sent
each hostile value a stranger would try (NUL, lone surrogates, 1e308, NaN, 5,000-digit
integers, deep nesting, 300 KB strings, wrong types): no answer is a 5xx.

Exhaustive rather than sampled, and in-process (TestClient over the ASGI app) against the
suite's database, PostgreSQL in CI. Bodies are written as raw JSON text, so values no JSON
encoder would produce (NaN, a lone surrogate escape, a 5,000-digit number) reach the server
as a stranger would send them. The other fields of a body hold placeholders that name nothing
that exists, so no request queues work.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from nightowl.common.config import Settings
from nightowl.platform.orm import Schedule
from nightowl_api.main import app

MISSING = "fuzz-missing"
DEEP = "[" * 5000 + "]" * 5000
# As JSON text, for a body field.
JSON_VALUES: dict[str, str] = {
    "nul": '"a\\u0000b"',
    "lone_surrogate": '"\\ud800x"',
    "1e308": "1e308",
    "-1e308": "-1e308",
    "nan": "NaN",
    "infinity": "Infinity",
    "5000_digits": "9" * 5000,
    "deep_nesting": DEEP,
    "300kb_string": json.dumps("x" * 300_000),
    "object": '{"a": {"b": [1, "x"]}}',
    "list": '[1, "x", null]',
    "true": "true",
    "null": "null",
    "negative": "-1",
    "huge_int": str(2**70),
    "string": '"x"',
}
# As URL text (already percent-encoded), for a path or query parameter.
URL_VALUES: dict[str, str] = {
    "nul": "a%00b",
    "lone_surrogate": "%ED%A0%80",
    "bad_utf8": "%FF%FE",
    "1e308": "1e308",
    "nan": "NaN",
    "5000_digits": "9" * 5000,
    "deep_nesting": quote("[" * 5000),
    # A URL's whole length is bounded by clients and servers (httpx: 64 KiB): the most it takes.
    "60kb_string": "x" * 60_000,
    "negative": "-1",
    "huge_int": str(2**70),
    "true": "true",
    "traversal": quote("../../etc/passwd", safe=""),
    "empty": "",
}


# Bodies the schema leaves open (OpenAI's routes take a free-form object) or nests: a base that
# names nothing that exists, and the fields inside it to put each hostile value in.
MARKER = "@@HOSTILE@@"
CHAT = {"model": MISSING, "messages": [{"role": "user", "content": "hi"}]}
NESTED: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {
    ("POST", "/v1/chat/completions"): (CHAT, [
        "model", "messages", "messages.0", "messages.0.content", "messages.0.role",
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed", "stop",
        "stream", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
        "repetition_penalty", "response_format", "user", "stream_options"]),
    ("POST", "/v1/completions"): ({"model": MISSING, "prompt": "hi"}, [
        "model", "prompt", "temperature", "max_tokens", "n", "seed", "stop", "echo", "suffix",
        "best_of", "logprobs"]),
    ("POST", "/v1/embeddings"): ({"model": MISSING, "input": "hi"}, [
        "model", "input", "dimensions", "encoding_format", "user"]),
    ("POST", "/v1/jobs"): ({"kind": "generate", "model": MISSING,
                            "items": [{"custom_id": "a", "text": "hi"}]}, [
        "items.0", "items.0.text", "items.0.custom_id", "items.0.params",
        "items.0.params.temperature", "params.temperature", "params.repetition_penalty",
        "params.max_new_tokens", "params.seed", "params.stop", "metadata.k"]),
    ("POST", "/v1/finetunes"): ({"kind": "sentiment", "base": MISSING,
                                 "training_file": MISSING}, [
        "hyperparameters.seed", "hyperparameters.epochs", "hyperparameters.lr",
        "hyperparameters.lora", "hyperparameters.lora.r"]),
    ("POST", "/v1/schedules"): ({"name": MISSING, "cron": "0 2 * * *", "target": "job",
                                 "spec": {"kind": "generate", "model": MISSING,
                                          "input_file_id": MISSING}}, [
        "spec.model", "spec.params", "spec.params.temperature", "spec.metadata",
        "spec.input_file_id", "spec.deadline_seconds"]),
}


def _with_marker(base: dict[str, Any], target: str) -> dict[str, Any]:
    body = json.loads(json.dumps(base))
    node: Any = body
    keys = target.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = MARKER
    else:
        node[last] = MARKER
    return body


@dataclass
class Tally:
    operations: int = 0
    requests: int = 0
    server_errors: list[str] = field(default_factory=list)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _placeholder(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    schema = _resolve(schema, spec)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, spec).get("type") != "null"]
            return _placeholder(options[0], spec) if options else None
    if "enum" in schema:
        return schema["enum"][0]
    return {"string": MISSING, "integer": 1, "number": 1, "boolean": False, "array": [],
            "object": {}}.get(schema.get("type", "string"), MISSING)


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def _url(path: str, params: list[dict[str, Any]], target: str | None, value: str) -> str:
    query = []
    for p in params:
        text = value if p["name"] == target else MISSING
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", text)
            path = path.replace("{" + p["name"] + ":path}", text)
        elif p["in"] == "query" and p["name"] == target:
            query.append(f"{p['name']}={text}")
    return path + ("?" + "&".join(query) if query else "")


def _send(client: TestClient, tally: Tally, method: str, url: str, label: str,
          **kwargs: Any) -> None:
    response = client.request(method, url, **kwargs)
    tally.requests += 1
    if response.status_code >= 500:
        tally.server_errors.append(f"{method} {url[:120]} [{label}] -> "
                                   f"{response.status_code} {response.text[:200]}")


def _fuzz_operation(client: TestClient, tally: Tally, spec: dict[str, Any], method: str,
                    path: str, op: dict[str, Any]) -> None:
    params = op.get("parameters", [])
    for p in params:
        for name, value in URL_VALUES.items():
            _send(client, tally, method, _url(path, params, p["name"], value),
                  f"{p['in']} {p['name']}={name}")
    content = op.get("requestBody", {}).get("content", {})
    base_url = _url(path, params, None, "")
    if "application/json" in content:
        schema = _resolve(content["application/json"]["schema"], spec)
        fields = schema.get("properties", {})
        required = set(schema.get("required", []))
        base = {n: _placeholder(s, spec) for n, s in fields.items() if n in required}
        extra_base, nested = NESTED.get((method, path), ({}, []))
        base.update(extra_base)
        headers = {"Content-Type": "application/json"}
        for target in [*fields, *nested]:
            text = json.dumps(_with_marker(base, target))
            for name, raw in JSON_VALUES.items():
                _send(client, tally, method, base_url, f"body {target}={name}",
                      content=text.replace(json.dumps(MARKER), raw).encode(
                          "utf-8", "surrogatepass"),
                      headers=headers)
        for name in ("deep_nesting", "5000_digits", "nan", "lone_surrogate", "list", "null"):
            _send(client, tally, method, base_url, f"whole body={name}",
                  content=JSON_VALUES[name].encode(), headers=headers)
    if "multipart/form-data" in content:
        schema = _resolve(content["multipart/form-data"]["schema"], spec)
        for target in schema.get("properties", {}):
            for name, raw in JSON_VALUES.items():
                text = json.loads(raw) if name in ("nul", "300kb_string", "string") else raw
                value = str(text).encode("utf-8", "surrogatepass")
                form = {"purpose": b"jobs", "file": b'{"text": "x"}\n', target: value}
                files = {"file": ("in.jsonl", form.pop("file"))}
                _send(client, tally, method, base_url, f"form {target}={name}",
                      files=files, data={k: v.decode("utf-8", "surrogateescape")
                                         for k, v in form.items()})


@pytest.fixture(scope="module")
def fuzz_key(migrated: Settings) -> Iterator[str]:
    from nightowl.platform.auth import create_key
    from nightowl.platform.db import session_scope

    with session_scope(migrated) as s:
        row, key = create_key(s, tenant_name=f"hostile-{uuid.uuid4().hex[:8]}")
        tenant_id = row.tenant_id
    yield key
    with session_scope(migrated) as s:  # nothing of it may fire in a later test's beat
        s.execute(delete(Schedule).where(Schedule.tenant_id == tenant_id))


def test_no_hostile_value_in_any_field_or_parameter_gets_a_5xx(
        models: Settings, fuzz_key: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = app.openapi()
    tally = Tally()
    with TestClient(app, headers={"Authorization": f"Bearer {fuzz_key}"},
                    raise_server_exceptions=False) as client:
        for method, path, op in _operations(spec):
            tally.operations += 1
            _fuzz_operation(client, tally, spec, method, path, op)
    with capsys.disabled():
        print(f"\nhostile fuzz: {tally.operations} operations, {tally.requests} requests, "
              f"{len(tally.server_errors)} 5xx")
    assert tally.operations >= 40 and tally.requests > 2000
    assert not tally.server_errors, "\n".join(tally.server_errors[:40])

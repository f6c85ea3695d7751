"""The real openai SDK against a real `nightowl api` process: files, batches, their errors.

The round trip runs real models on a real worker; the other tests need neither (their batches
fail validation, or wait on the gpu queue that no test worker reads).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from helpers import Worker
from nightowl.common.config import Settings

# Registered by tests/api/conftest.py.
GEN, GEN2, SENT = "apitest-gen", "apitest-gen2", "apitest-sent"
GPU = {"nightowl_queue": "gpu"}
FINAL = ("completed", "failed", "expired", "cancelled")


def _req(custom_id: str, body: dict[str, Any], url: str = "/v1/chat/completions") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _chat(custom_id: str, text: str, model: str = GEN, **params: Any) -> str:
    return _req(custom_id, {"model": model, "messages": [{"role": "user", "content": text}],
                            **params})


def _upload(client: Any, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return str(client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch").id)


def _wait(client: Any, batch_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in FINAL:
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.3)
    return batch


@pytest.fixture
def two_tenants(fake_models: Settings, openai_client: Callable[[str], Any],
                make_api_key: Callable[[str], str]) -> tuple[Any, Any]:
    import uuid

    suffix = uuid.uuid4().hex[:6]
    return (openai_client(make_api_key(f"sdk-a-{suffix}")),
            openai_client(make_api_key(f"sdk-b-{suffix}")))


def test_bad_requests_raise_the_sdks_own_errors(two_tenants: tuple[Any, Any],
                                                openai_client: Callable[[str], Any]) -> None:
    a, b = two_tenants
    file_id = _upload(a, [_chat("1", "hello")])
    with pytest.raises(openai.NotFoundError):
        a.batches.create(input_file_id="file_nope", endpoint="/v1/chat/completions",
                         completion_window="24h")
    with pytest.raises(openai.BadRequestError) as bad:
        a.batches.create(input_file_id=file_id, endpoint="/v1/audio/speech",  # type: ignore[arg-type]
                         completion_window="24h")
    assert bad.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError):
        a.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                         completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        a.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                         completion_window="24h", metadata={"k": "v" * 600})
    with pytest.raises(openai.AuthenticationError):
        openai_client("nk-forged").batches.list()

    batch = a.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                             completion_window="24h", metadata=GPU)
    for call in (lambda: b.batches.retrieve(batch.id), lambda: b.batches.cancel(batch.id),
                 lambda: b.files.retrieve(file_id), lambda: b.files.content(file_id),
                 lambda: b.files.delete(file_id), lambda: a.batches.retrieve("batch_nope"),
                 lambda: b.batches.create(input_file_id=file_id, completion_window="24h",
                                          endpoint="/v1/chat/completions")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert a.batches.cancel(batch.id).status in ("cancelling", "cancelled")


def test_bad_envelopes_give_a_failed_batch_with_line_numbers(
        two_tenants: tuple[Any, Any]) -> None:
    a, _ = two_tenants
    file_id = _upload(a, [
        _chat("ok", "hello"),
        "{not json",
        _req("c3", {"model": GEN, "prompt": "x"}, url="/v1/completions"),
        _chat("c4", "hi", model="no-such-model"),
        _chat("c5", "hi", model=GEN2),
        _chat("ok", "duplicate id"),
        json.dumps({"custom_id": "c7", "method": "GET", "url": "/v1/chat/completions",
                    "body": {}}),
        _req("c8", {"model": GEN, "input": "x"}, url="/v1/embeddings"),
        _chat("c9", "hi", model=SENT),
        _chat("c10", "same version, another name", model=f"{GEN}@v1"),
    ])
    created = a.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    batch = a.batches.retrieve(created.id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.output_file_id is None and batch.request_counts.total == 0
    by_line = {e.line: e for e in batch.errors.data}
    # An unknown model (line 4) or one of the wrong kind (line 9) fails only its own request,
    # as OpenAI does; these lines are the batch's own problems.
    assert sorted(by_line) == [2, 3, 5, 6, 7, 8]
    assert by_line[2].code == "invalid_json_line"
    assert by_line[3].code == "mismatched_endpoint" and by_line[3].param == "url"
    assert by_line[5].code == "mismatched_model" and by_line[5].param == "body.model"
    assert by_line[6].code == "duplicate_custom_id" and "line 1" in by_line[6].message
    assert by_line[7].param == "method" and by_line[8].code == "mismatched_endpoint"


def test_cancel_list_and_pages(two_tenants: tuple[Any, Any]) -> None:
    a, b = two_tenants
    file_id = _upload(a, [_chat("q1", "one"), _chat("q2", "two", max_tokens=3)])
    made = [a.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                             completion_window="24h", metadata={**GPU, "n": str(i)})
            for i in range(3)]
    assert made[0].status == "validating" and made[0].metadata == {**GPU, "n": "0"}
    assert a.batches.retrieve(made[0].id).status == "in_progress"  # checked before the answer
    assert made[0].request_counts.total == 2 and made[0].expires_at > made[0].created_at

    newest_first = [m.id for m in reversed(made)]
    page = a.batches.list(limit=2)
    assert [x.id for x in page.data] == newest_first[:2] and page.has_more
    rest = a.batches.list(limit=2, after=page.data[-1].id)
    assert [x.id for x in rest.data] == newest_first[2:] and not rest.has_more
    assert [x.id for x in a.batches.list(limit=1)] == newest_first  # the SDK follows pages
    assert b.batches.list().data == []

    cancelled = a.batches.cancel(made[1].id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    counts = cancelled.request_counts
    assert (counts.failed, counts.cancelled) == (0, 2)
    assert cancelled.output_file_id is None
    lines = [json.loads(x) for x in a.files.content(cancelled.error_file_id).text.splitlines()]
    assert [(x["custom_id"], x["error"]["code"]) for x in lines] == [
        ("q1", "batch_cancelled"), ("q2", "batch_cancelled")]
    assert a.files.retrieve(cancelled.error_file_id).purpose == "batch_output"
    with pytest.raises(openai.ConflictError):
        a.batches.cancel(made[1].id)
    for m in (made[0], made[2]):
        a.batches.cancel(m.id)

    listed = [f.id for f in a.files.list(purpose="batch")]
    assert listed == [file_id]
    assert a.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        a.files.content(file_id)


@pytest.mark.integration
def test_round_trip_on_real_models(models: Settings, openai_client: Callable[[str], Any],
                                   make_api_key: Callable[[str], str],
                                   start_worker: Callable[..., Worker]) -> None:
    client = openai_client(make_api_key("sdk-round-trip"))
    worker = start_worker()
    specs = {
        "/v1/chat/completions": [
            _chat("chat-1", "Hello there", model="tiny-generator", max_tokens=8,
                  temperature=0),
            _chat("chat-2", "Tell me more", model="tiny-generator@prod", max_tokens=4, n=2,
                  temperature=0.8, seed=1),
        ],
        "/v1/completions": [
            _req("cmp-1", {"model": "tiny-generator", "prompt": "Once upon", "max_tokens": 6,
                           "temperature": 0}, url="/v1/completions"),
        ],
        "/v1/classifications": [
            _req(f"cls-{i}", {"model": "tiny-sentiment", "input": text},
                 url="/v1/classifications")
            for i, text in enumerate(["great film", "awful plot"])
        ],
        "/v1/translations": [
            _req("tr-1", {"model": "tiny-translator", "input": "the cat sees the dog",
                          "max_tokens": 8}, url="/v1/translations"),
        ],
    }
    batches = {
        endpoint: client.batches.create(input_file_id=_upload(client, lines), endpoint=endpoint,
                                        completion_window="24h", metadata={"suite": "api"})
        for endpoint, lines in specs.items()
    }
    results: dict[str, dict[str, Any]] = {}
    for endpoint, created in batches.items():
        batch = _wait(client, created.id, timeout=150)
        assert batch.status == "completed", (endpoint, batch.errors, worker.output()[-3000:])
        total = len(specs[endpoint])
        assert (batch.request_counts.total, batch.request_counts.completed) == (total, total)
        assert batch.error_file_id is None and batch.completed_at >= batch.in_progress_at
        text = client.files.content(batch.output_file_id).text
        assert text == client.files.content(batch.output_file_id).text  # stable bytes
        assert client.files.retrieve(batch.output_file_id).bytes == len(text.encode())
        for line in text.splitlines():
            row = json.loads(line)
            assert row["response"]["status_code"] == 200 and row["error"] is None
            results[row["custom_id"]] = row["response"]["body"]
    assert set(results) == {json.loads(x)["custom_id"] for v in specs.values() for x in v}

    chat1, chat2 = results["chat-1"], results["chat-2"]
    assert chat1["object"] == "chat.completion" and chat1["model"] == "tiny-generator"
    assert chat1["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(chat1["choices"][0]["message"]["content"], str)
    assert 0 < chat1["usage"]["prompt_tokens"] < chat1["usage"]["total_tokens"] <= 256
    assert len(chat2["choices"]) == 2
    completion = results["cmp-1"]
    assert completion["object"] == "text_completion"
    assert isinstance(completion["choices"][0]["text"], str)
    assert completion["choices"][0]["finish_reason"] in ("stop", "length")
    assert results["cls-0"]["object"] == "classification"
    assert isinstance(results["tr-1"]["choices"][0]["text"], str)
    assert [b.id for b in client.batches.list()] == [b.id for b in reversed(batches.values())]

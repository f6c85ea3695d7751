"""OpenAI request bodies onto nightowl inputs and parameters, chat rendering, output lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nightowl.common import chat
from nightowl.common.enums import ItemStatus
from nightowl.openai.lines import parse_line
from nightowl.openai.output import output_line
from nightowl.openai.problems import LineProblem
from nightowl.platform.orm import JobItem, utcnow


def _parse(body: dict[str, Any], url: str = "/v1/completions") -> Any:
    raw = json.dumps({"custom_id": "x", "method": "POST", "url": url, "body": body}).encode()
    return parse_line(raw, 7, url)


SAMPLED = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}


@pytest.mark.parametrize(("body", "params"), [
    ({"max_tokens": 12}, {**SAMPLED, "max_new_tokens": 12}),
    ({"max_completion_tokens": 9, "seed": 3}, {**SAMPLED, "max_new_tokens": 9, "seed": 3}),
    ({"temperature": 0}, {"do_sample": False}),
    ({"temperature": 0.7, "top_p": 0.9}, {**SAMPLED, "temperature": 0.7, "top_p": 0.9}),
    ({"top_k": 5, "top_p": 0}, {**SAMPLED, "top_k": 5}),
    ({"n": 3, "stop": "\n"}, {**SAMPLED, "num_return_sequences": 3, "stop": ["\n"]}),
    ({"n": 1, "stop": ["a", "b"], "user": "kept by nobody"}, {**SAMPLED, "stop": ["a", "b"]}),
    ({"logprobs": 2, "presence_penalty": 0.5, "frequency_penalty": -1, "temperature": 0},
     {"do_sample": False, "logprobs": True, "top_logprobs": 2, "presence_penalty": 0.5,
      "frequency_penalty": -1.0}),
])
def test_generation_params_map_onto_the_runners_names(body: dict[str, Any],
                                                      params: dict[str, Any]) -> None:
    """OpenAI's sampling defaults (temperature 1, top_p 1, no top-k) unless the body says."""
    line = _parse({"model": "m", "prompt": "hi", **body})
    assert line.problem is None and line.request is not None
    assert (line.request.text, line.request.params) == ("hi", params)


def test_n_greedy_choices_are_one_decode_given_n_times() -> None:
    line = _parse({"model": "m", "prompt": "hi", "temperature": 0, "n": 3})
    assert line.problem is None and line.request is not None
    assert line.request.copies == 3 and "num_return_sequences" not in line.request.params
    item = JobItem(job_id="batch_x", idx=0, custom_id="x", status=ItemStatus.SUCCEEDED,
                   input={"prompt": "hi", "copies": 3}, output={"text": " there"},
                   tokens_in=2, tokens_out=4, finished_at=utcnow())
    body = output_line("batch_x", item, "/v1/completions", "m")["response"]["body"]
    assert [c["text"] for c in body["choices"]] == [" there"] * 3
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 12, "total_tokens": 14}


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"prompt": "hi"}, "missing_required_parameter", "model"),
    ({"model": "m"}, "missing_required_parameter", "prompt"),
    ({"model": "m", "prompt": ["a", "b"]}, "invalid_request", "prompt"),
    ({"model": "m", "prompt": "hi", "max_tokens": 0}, "invalid_request", "max_tokens"),
    ({"model": "m", "prompt": "hi", "temperature": "hot"}, "invalid_request", "temperature"),
    ({"model": "m", "prompt": "hi", "n": 20}, "invalid_request", "n"),
    ({"model": "m", "prompt": "hi", "stop": ["s"] * 17}, "invalid_request", "stop"),
    ({"model": "m", "prompt": "hi", "stream": True}, "invalid_request", "stream"),
    ({"model": "m", "prompt": "hi", "logit_bias": {}}, "unsupported_parameter", "logit_bias"),
    ({"model": "m", "prompt": "hi", "echo": True}, "unsupported_parameter", "echo"),
    ({"model": "m", "prompt": "hi", "nonsense": 1}, "unsupported_parameter", "nonsense"),
])
def test_bad_bodies_fail_their_line_naming_the_parameter(body: dict[str, Any], code: str,
                                                         param: str) -> None:
    line = _parse(body)
    assert line.request is None and line.problem is not None
    assert (line.problem.code, line.problem.param) == (code, param)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": []}, "tools"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, "messages[0].content"),
])
def test_chat_bodies_refuse_what_a_text_model_cannot_do(body: dict[str, Any],
                                                        param: str) -> None:
    line = _parse({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body},
                  "/v1/chat/completions")
    assert line.problem is not None and line.problem.param == param, line.problem


@pytest.mark.parametrize("envelope", [
    {"custom_id": "", "method": "POST", "url": "/v1/completions", "body": {}},
    {"custom_id": "x", "method": "GET", "url": "/v1/completions", "body": {}},
    {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}},
    {"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": []},
])
def test_bad_envelopes_are_the_batchs_problem(envelope: dict[str, Any]) -> None:
    with pytest.raises(LineProblem):
        parse_line(json.dumps(envelope).encode(), 3, "/v1/completions")


def test_chat_renders_with_the_models_template_and_falls_back_to_role_prefixes(
    tmp_path: Path,
) -> None:
    messages = _parse({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text",
                                                                        "text": "there"}]},
    ]}, "/v1/chat/completions").request.messages
    assert chat.render(messages, None) == "system: Be brief.\nuser: Hi there\nassistant:"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": "{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}"
                         "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
        "eos_token": {"content": "</s>", "lstrip": False},
    }))
    template = chat.load_template(str(tmp_path))
    assert chat.render(messages, template) == (
        "[system]Be brief.</s>[user]Hi there</s>[assistant]")
    (tmp_path / "refuses").mkdir()
    (tmp_path / "refuses" / "chat_template.jinja").write_text(
        "{{ raise_exception('only user messages') }}")
    with pytest.raises(ValueError, match="only user messages"):
        chat.render(messages, chat.load_template(str(tmp_path / "refuses")))


def _item(status: ItemStatus, **kw: Any) -> JobItem:
    return JobItem(idx=4, custom_id="req-4", input={"text": "p", "params": {"max_new_tokens": 3}},
                   status=status, finished_at=utcnow(), **kw)


def test_output_lines_are_shaped_like_openais() -> None:
    generated = {"text": "a b c", "finish_reason": "eos", "choices": [
        {"text": "a b c", "finish_reason": "eos"}, {"text": "d", "finish_reason": "length"}]}
    done = output_line("batch_1", _item(ItemStatus.SUCCEEDED, output=generated,
                                        tokens_in=5, tokens_out=4),
                       "/v1/chat/completions", "tiny")
    body = done["response"]["body"]
    assert done["custom_id"] == "req-4" and done["error"] is None
    assert done["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert [c["message"]["content"] for c in body["choices"]] == ["a b c", "d"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    # The same row always gives the same ids: downloads are byte-identical.
    again = output_line("batch_1", _item(ItemStatus.SUCCEEDED, output=generated,
                                         tokens_in=5, tokens_out=4),
                        "/v1/chat/completions", "tiny")
    assert again["id"] == done["id"] and again["response"]["body"]["id"] == body["id"]

    text = output_line("batch_1", _item(ItemStatus.SUCCEEDED, output={"text": "xyz"},
                                        tokens_out=3), "/v1/completions", "tiny")
    choice = text["response"]["body"]["choices"][0]
    assert text["response"]["body"]["object"] == "text_completion"
    assert (choice["text"], choice["finish_reason"]) == ("xyz", "length")

    failed = output_line("batch_1", _item(ItemStatus.FAILED, error_code="too_long",
                                          error_message="text is 900 tokens"),
                         "/v1/completions", "tiny")
    assert failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["message"] == "text is 900 tokens"
    expired = output_line("batch_1", _item(ItemStatus.EXPIRED, error_code="expired"),
                          "/v1/completions", "tiny")
    assert expired["response"] is None and expired["error"]["code"] == "batch_expired"


def test_prompts_and_inputs_as_token_ids() -> None:
    for url, field in (("/v1/completions", "prompt"), ("/v1/embeddings", "input")):
        for given in ([5, 7, 9], [[5, 7, 9]]):
            line = _parse({"model": "m", field: given}, url)
            assert line.request is not None and line.request.token_ids == [5, 7, 9], line
    refused = _parse({"model": "m", "prompt": [[5], [7]]})
    assert refused.problem is not None and refused.problem.param == "prompt"
    several = _parse({"model": "m", "input": [[5], [7]]}, "/v1/embeddings")
    assert several.request is not None and several.request.parts == [[5], [7]]
    chat_ids = _parse({"model": "m", "messages": [{"role": "user", "content": [1, 2]}]},
                      "/v1/chat/completions")
    assert chat_ids.problem is not None


def test_a_responses_body_is_a_chat_request_in_other_words() -> None:
    line = _parse({"model": "m", "instructions": "be brief", "max_output_tokens": 7,
                   "metadata": {"k": "v"}, "input": [
                       {"role": "developer", "content": "terse"},
                       {"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": "hi"}]}]}, "/v1/responses")
    assert line.problem is None and line.request is not None
    assert line.request.messages == [{"role": "system", "content": "be brief"},
                                     {"role": "system", "content": "terse"},
                                     {"role": "user", "content": "hi"}]
    assert line.request.params["max_new_tokens"] == 7
    assert line.request.echo is not None and line.request.echo["metadata"] == {"k": "v"}
    for body, param in (({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
                        ({"input": "hi", "reasoning": {}}, "reasoning"),
                        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
                         "input[0].content"),
                        ({"input": "hi", "stream": True}, "stream"),
                        ({"input": "hi", "metadata": {"k": 1}}, "metadata"),
                        ({}, "input")):
        refused = _parse({"model": "m", **body}, "/v1/responses")
        assert refused.problem is not None and refused.problem.param == param, refused.problem


def test_chat_chunks_become_the_responses_stream_the_sdk_parses() -> None:
    import asyncio

    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    from nightowl.openai import responses

    chat_sse = [f"data: {json.dumps(c)}\n\n" for c in (
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "the "}}]},
        {"choices": [{"index": 0, "delta": {"content": "owl"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})] + [
        "data: [DONE]\n\n"]

    async def collect() -> list[str]:
        return [e async for e in responses.stream_events(
            responses.chat_chunks(chat_sse), rid="resp_req_x_0", model="m", created=1.0,
            echo={"metadata": {"k": "v"}})]

    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    events = [adapter.validate_python(json.loads(e.split("data: ", 1)[1]))
              for e in asyncio.run(collect())]
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    done = events[-1].response
    assert done.output_text == "the owl" and done.metadata == {"k": "v"}
    assert done.usage.total_tokens == 5 and done.id == "resp_req_x_0"


def test_an_embeddings_batch_line_may_list_its_inputs() -> None:
    """One line, one item: the entries (texts or token-id lists) stay together, OpenAI's cap
    and a bad entry named by its position; the direct path splits lists itself."""
    url = "/v1/embeddings"
    line = _parse({"model": "m", "input": ["a", [5, 7], "c"]}, url)
    assert line.request is not None and line.request.parts == ["a", [5, 7], "c"]
    for given, param in (([], "input"), (["x"] * 2049, "input"), (["a", ""], "input[1]"),
                         (["a", 3], "input[1]"), (["a", [[1]]], "input[1]"),
                         (["a", [-1]], "input[1]")):
        refused = _parse({"model": "m", "input": given}, url)
        assert refused.problem is not None and refused.problem.param == param, given
    assert _parse({"model": "m", "input": ["x"] * 2048}, url).problem is None
    assert _parse({"model": "m", "prompt": []}).problem is not None  # completions: still one

    item = JobItem(job_id="batch_x", idx=0, custom_id="x", status=ItemStatus.SUCCEEDED,
                   input={"texts": ["a", "b"], "encoding_format": "base64"},
                   output={"embeddings": [[1.0, 0.0], [0.0, 1.0]]}, tokens_in=7, tokens_out=0,
                   finished_at=utcnow())
    body = output_line("batch_x", item, url, "m")["response"]["body"]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == "AAAAAAAAgD8="  # [0.0, 1.0] as float32
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}

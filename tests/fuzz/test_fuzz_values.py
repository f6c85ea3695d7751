"""Fuzz the values inside a job request (params, metadata, deadline, item text) with nested,
non-finite, huge and non-text (lone surrogate) JSON: every answer is below 500."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightowl.common.config import Settings

EXAMPLES = int(os.environ.get("NIGHTOWL_FUZZ_EXAMPLES", "40"))
SURROGATE = "@@SURROGATE@@"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.just(SURROGATE), st.sampled_from([1e308, -1e308, 10**30, 0, -5, 1e9]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)
nesting = st.integers(min_value=0, max_value=3000)


def _body(params: Any, metadata: Any, deadline: Any, text: Any, depth: int) -> bytes:
    raw = json.dumps({"kind": "generate", "model": "tiny-generator", "queue": "gpu",
                      "params": params, "metadata": metadata, "deadline_seconds": deadline,
                      "items": [{"custom_id": "a", "text": text}]})
    raw = raw.replace(json.dumps(SURROGATE), '"\\ud800"')
    if depth:
        raw = raw[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
    return raw.encode()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(params=values, metadata=values, deadline=scalars, text=scalars, depth=nesting)
def test_no_value_gets_a_server_error(client: Any, models: Settings, params: Any,
                                      metadata: Any, deadline: Any, text: Any,
                                      depth: int) -> None:
    response = client.post("/v1/jobs", content=_body(params, metadata, deadline, text, depth),
                           headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text

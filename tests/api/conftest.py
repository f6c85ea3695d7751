"""Fixtures of the API tests: registry entries that need no weights, and openai SDK clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.platform.db import session_scope

# A template unlike the role-prefix fallback, so a test can tell which one rendered the prompt.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Registered, never run: a worker would fail to load them. Jobs on them use the gpu queue, which
# the tests' CPU workers do not read.
GEN, GEN2, SENT = "apitest-gen", "apitest-gen2", "apitest-sent"


@pytest.fixture(scope="session")
def fake_models(migrated: Settings) -> Settings:
    from nightowl.registry import versions as registry

    home = migrated.models_path / "apitest"
    gen_dir = home / "gen"
    gen_dir.mkdir(parents=True, exist_ok=True)
    (gen_dir / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHAT_TEMPLATE, "eos_token": {"content": "</s>"}}))
    (home / "sent").mkdir(exist_ok=True)
    with session_scope(migrated) as s:
        for name, kind, source in ((GEN, TaskKind.GENERATE, gen_dir),
                                   (GEN2, TaskKind.GENERATE, gen_dir),
                                   (SENT, TaskKind.SENTIMENT, home / "sent")):
            if not registry.list_versions(s, name):
                registry.register(s, name=name, kind=kind, source=str(source))
    return migrated


@pytest.fixture
def openai_client(api_server: str) -> Callable[[str], Any]:
    """openai_client(key) -> the real openai SDK pointed at the test API process."""
    from openai import OpenAI

    def make(key: str) -> OpenAI:
        return OpenAI(base_url=f"{api_server}/v1", api_key=key, max_retries=0, timeout=30)

    return make


"""Chat messages to one prompt, with the model's own chat template, rendered by jinja2 alone.

The API must not import torch or transformers, so the template is read from the model
directory (tokenizer_config.json's `chat_template`, or chat_template.jinja) and rendered the way
transformers does: a sandboxed environment, trim_blocks/lstrip_blocks, raise_exception().
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

from jinja2 import Template, TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nightowl.common.errors import InvalidInput

ROLES = ("system", "developer", "user", "assistant", "tool")
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")


@dataclass(frozen=True)
class ChatTemplate:
    template: Template
    special: dict[str, str]


def _raise(message: str) -> NoReturn:
    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    # Templates come from model directories; the sandbox keeps a hostile one from reaching Python.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


@lru_cache(maxsize=16)
def load_template(source: str) -> ChatTemplate | None:
    """The chat template of a local model directory, or None when it has none."""
    path = Path(source)
    if not path.is_dir():
        return None
    config: dict[str, Any] = {}
    config_file = path / "tokenizer_config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError:
            config = {}
    text = config.get("chat_template")
    if isinstance(text, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in text if isinstance(t, dict)}
        text = named.get("default")
    jinja_file = path / "chat_template.jinja"
    if not isinstance(text, str) and jinja_file.is_file():
        text = jinja_file.read_text(encoding="utf-8")
    if not isinstance(text, str) or not text.strip():
        return None
    special = {k: t for k in _SPECIAL_KEYS if (t := _token_text(config.get(k))) is not None}
    try:
        return ChatTemplate(_environment().from_string(text), special)
    except TemplateError as e:
        raise InvalidInput(f"the chat template of model directory {path} is broken: {e}") from e


def message_text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a content list; None if neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                part.get("text"), str
            ):
                return None
            parts.append(part["text"])
        return "".join(parts)
    return None


def render(messages: list[dict[str, str]], template: ChatTemplate | None) -> str:
    """The prompt for a conversation, ending where the assistant's reply starts.

    Raises ValueError with the template's own message when the template refuses the messages.
    """
    if template is None:
        # No template: plain role prefixes, which small base models continue well enough.
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])
    try:
        return template.template.render(messages=messages, add_generation_prompt=True,
                                        **template.special)
    except TemplateError as e:
        raise ValueError(f"the model's chat template rejected the messages: {e}") from e

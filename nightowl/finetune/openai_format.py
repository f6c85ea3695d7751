"""Fine-tune files in OpenAI's formats, read into nightowl's training rows.

OpenAI's chat format is one `{"messages": [...]}` conversation a line, trained on its last
assistant reply; the legacy format is `{"prompt", "completion"}`. For a generate model a row is
the text the model should produce: the conversation rendered with the model's own chat template
(exactly the prompt a chat completion gives it later) followed by the reply, or prompt and
completion joined. Sentiment and translation models take the same conversations as
(user text -> label or translation); nightowl's own rows (`text`, `label`, `source`,
`target`) are accepted as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nightowl.common import chat
from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.finetune.data import FIELDS, MAX_PROBLEMS

_TARGET = {TaskKind.SENTIMENT: ("text", "label"), TaskKind.TRANSLATE: ("source", "target")}


def read_rows(path: Path, kind: TaskKind, template: chat.ChatTemplate | None, *,
              param: str) -> list[dict[str, Any]]:
    """Rows of an OpenAI fine-tune file; every bad line named (InvalidInput, nothing kept)."""
    rows: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                if not isinstance(obj, dict):
                    raise ValueError("expected a JSON object per line")
                rows.append(_row(obj, kind, template))
            except (ValueError, UnicodeDecodeError) as e:
                problems.append((f"line {line_no}", str(e)))
                if len(problems) >= MAX_PROBLEMS:
                    break
    if problems:
        raise InvalidInput(f"{param} has invalid lines; nothing was queued", problems,
                           param=param)
    if not rows:
        raise InvalidInput(f"{param} has no examples to train on", param=param)
    return rows


def _row(obj: dict[str, Any], kind: TaskKind, template: chat.ChatTemplate | None
         ) -> dict[str, Any]:
    if "messages" in obj:
        prompt, reply, user = _conversation(obj["messages"], template)
        if kind == TaskKind.GENERATE:
            return {"text": prompt + reply}
        source, target = _TARGET[kind]
        return {source: user, target: reply}
    if "prompt" in obj or "completion" in obj:
        given, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(given, str) or not isinstance(completion, str) or not completion:
            raise ValueError("prompt and completion must be strings (completion non-empty)")
        if kind == TaskKind.GENERATE:
            return {"text": given + completion}
        source, target = _TARGET[kind]
        return {source: given, target: completion.strip()}
    native = {f: obj.get(f) for f in FIELDS[kind]}
    if all(isinstance(v, str) and v.strip() for v in native.values()):
        return native
    raise ValueError('expected {"messages": [...]} (chat format) or {"prompt", "completion"}'
                     + f" (or nightowl's {', '.join(FIELDS[kind])})")


def _conversation(messages: Any, template: chat.ChatTemplate | None) -> tuple[str, str, str]:
    """(the prompt before the last assistant message, that message, the last user text)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content}")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in chat.ROLES or m["role"] == "tool":
            raise ValueError(f"messages[{i}].role must be system, developer, user or assistant")
        text = chat.message_text(m.get("content"))
        if text is None:
            raise ValueError(f"messages[{i}].content must be text")
        clean.append({"role": str(m["role"]), "content": text})
    if clean[-1]["role"] != "assistant" or not clean[-1]["content"]:
        raise ValueError("the last message must be the assistant's reply to learn")
    users = [m["content"] for m in clean[:-1] if m["role"] == "user"]
    if not users:
        raise ValueError("a conversation needs a user message before the assistant's reply")
    return chat.render(clean[:-1], template), clean[-1]["content"], users[-1]

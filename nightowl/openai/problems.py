"""A refused OpenAI request, as OpenAI's error object {code, message, param}."""

from __future__ import annotations

from typing import Any


class LineProblem(Exception):
    """One bad request: an OpenAI error object {code, message, param}."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    def as_error(self, line_no: int) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": line_no, "param": self.param}

"""One error model for every error answer: core errors, malformed bodies, unparsable requests
and the guard's refusals all become `ErrorResponse` (OpenAI's `{"error": {message, type,
param, code}}`, so its SDKs raise the right class), built here and nowhere else."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nightowl.common.errors import (
    Conflict,
    InvalidInput,
    ModelLoadError,
    NightowlError,
    NotFound,
    RateLimited,
    Unauthorized,
)
from nightowl.common.values import printable
from nightowl.openai.direct import error_of
from nightowl_api import dashboard_ops
from nightowl_api.schemas import ErrorDetail, ErrorResponse

_STATUS = {NotFound: 404, InvalidInput: 400, ModelLoadError: 400, Conflict: 409,
           Unauthorized: 401, RateLimited: 429}
_OPENAI_TYPE = {401: "authentication_error", 404: "invalid_request_error",
                429: "rate_limit_error", 500: "server_error", 503: "server_error",
                504: "server_error"}
# Routes whose malformed bodies answer 400 as OpenAI's do (FastAPI's own 422 elsewhere).
_OPENAI_PATHS = ("/v1/files", "/v1/batches", "/v1/models", "/v1/chat", "/v1/completions",
                 "/v1/embeddings", "/v1/responses", "/v1/fine_tuning")


def error_content(status: int, message: str, *, code: str | None, param: str | None = None,
                  problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON of an error answer with this status."""
    # What a caller sent may be quoted back: NUL and lone surrogates go out as escapes.
    detail = ErrorDetail(message=printable(message),
                         type=_OPENAI_TYPE.get(status, "invalid_request_error"),
                         param=printable(param) if param else param, code=code,
                         problems=problems)
    # `problems` is nightowl's addition: left out when empty, so the body is OpenAI's exactly.
    return ErrorResponse(error=detail).model_dump(
        exclude={"error": {"problems"}} if problems is None else None)


def error_response(status: int, message: str, *, code: str | None, param: str | None = None,
                   problems: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status < 500 and status != 429:
        # OpenAI's SDKs retry 409s unless told not to; a repeat would fail the same way.
        headers.setdefault("x-should-retry", "false")
    return JSONResponse(status_code=status, headers=headers,
                        content=error_content(status, message, code=code, param=param,
                                              problems=problems))


def line_error_response(line: dict[str, Any]) -> JSONResponse | None:
    """A direct request's failed output line as its HTTP answer, the line's OpenAI error body
    as it is; None when the request succeeded."""
    failed = error_of(line)
    if failed is None:
        return None
    status, error = failed
    return JSONResponse(status_code=status, content={"error": error},
                        headers={"x-should-retry": "false"} if status < 500 else {})


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


async def _nightowl_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NightowlError)
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    message = str(exc).split("\n")[0]
    if status == 404 and dashboard_ops.wants_html(request):
        return dashboard_ops.not_found(request, message)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status == 429:
        # Back-pressure, not a bad request: the SDKs wait this long and retry by themselves.
        headers["Retry-After"] = str(max(1, math.ceil(getattr(exc, "retry_after", 1) or 1)))
    problems = ([{"where": w, "message": m} for w, m in exc.problems[:1000]]
                if isinstance(exc, InvalidInput) and exc.problems else None)
    code = "invalid_api_key" if status == 401 else (
        getattr(exc, "code", None) or snake(type(exc).__name__))
    return error_response(status, message, code=code, param=getattr(exc, "param", None),
                          problems=problems, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """A malformed body: 422 as FastAPI does, but 400 on the OpenAI-compatible routes."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:])
    # Without the offending input: it can be huge, or not text at all (lone surrogates).
    problems = jsonable_encoder([{k: v for k, v in e.items() if k != "input"}
                                 for e in exc.errors()])
    status = 400 if request.url.path.startswith(_OPENAI_PATHS) else 422
    return error_response(status, f"{where or 'request'}: {first.get('msg', 'invalid request')}",
                          code="invalid_request", param=where or None, problems=problems)


async def _http_error(request: Request, exc: Exception) -> Response:
    """A body that cannot even be parsed (bad JSON bytes, broken multipart) gets the same error
    shape as every other /v1 error; the dashboard keeps FastAPI's own answers."""
    assert isinstance(exc, StarletteHTTPException)
    if not request.url.path.startswith("/v1/"):
        if exc.status_code == 404 and dashboard_ops.wants_html(request):
            return dashboard_ops.not_found(request)
        return await http_exception_handler(request, exc)
    code = snake(type(exc).__name__) if exc.status_code >= 500 else "invalid_request"
    return error_response(exc.status_code, str(exc.detail), code=code,
                          headers={**(exc.headers or {}), "x-should-retry": "false"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(NightowlError, _nightowl_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

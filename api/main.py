"""The FastAPI app: routes, and the translation of core errors into HTTP statuses."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nightowl import __version__
from nightowl.common.errors import (
    Conflict,
    InvalidInput,
    ModelLoadError,
    NightowlError,
    NotFound,
    RateLimited,
    Unauthorized,
)
from nightowl_api import dashboard, dashboard_ops, metrics, ops
from nightowl_api.deps import require_key
from nightowl_api.guard import GuardMiddleware
from nightowl_api.quota_headers import QuotaHeadersMiddleware
from nightowl_api.request_ids import RequestIdMiddleware
from nightowl_api.routes import (
    batches,
    files,
    fine_tuning,
    finetunes,
    jobs,
    models,
    openai_direct,
    query,
    responses,
    schedules,
    workers,
)
from nightowl_api.schemas import ERROR_RESPONSES

app = FastAPI(
    title="nightowl",
    version=__version__,
    description="Bulk inference and fine-tunes for Transformer models.",
    # FastAPI's own docs pages load Swagger UI / ReDoc from a CDN; api/ops.py serves /docs
    # from vendored files instead.
    docs_url=None,
    redoc_url=None,
)
ops.install(app)
# Every router needs a key; only /healthz and /metrics answer anonymous callers.
app.include_router(jobs.router, dependencies=[require_key], responses=ERROR_RESPONSES)
# Before /v1/models/{id}, which would otherwise take /v1/models/compare for a model id.
app.include_router(query.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(models.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(openai_direct.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(responses.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(files.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(batches.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(finetunes.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(fine_tuning.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(schedules.router, dependencies=[require_key], responses=ERROR_RESPONSES)
app.include_router(workers.router, dependencies=[require_key], responses=ERROR_RESPONSES)
# Open like /healthz: Prometheus scrapes without a key, and it shows no tenant's data.
app.include_router(metrics.router)
# The web dashboard at / (its pages take the key from a cookie; see api/dashboard_auth.py).
dashboard.install(app)
app.add_middleware(QuotaHeadersMiddleware)
# The key and the body size are checked before anything reads the body.
app.add_middleware(GuardMiddleware)
# Outside the guard, so its 401 and 413 carry an x-request-id like every other answer.
app.add_middleware(RequestIdMiddleware)

_STATUS = {NotFound: 404, InvalidInput: 400, ModelLoadError: 400, Conflict: 409,
           Unauthorized: 401, RateLimited: 429}


@app.exception_handler(NightowlError)
async def _nightowl_error(request: Request, exc: NightowlError) -> Response:
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    if status == 404 and dashboard_ops.wants_html(request):
        return dashboard_ops.not_found(request, str(exc).split("\n")[0])
    # OpenAI's error shape ({message, type, param, code}), so its SDKs raise the right class.
    body: dict[str, object] = {
        "message": str(exc).split("\n")[0],
        "type": _OPENAI_TYPE.get(status, "invalid_request_error"),
        "param": getattr(exc, "param", None),
        "code": "invalid_api_key" if status == 401 else (
            getattr(exc, "code", None) or _snake(type(exc).__name__)),
    }
    if isinstance(exc, InvalidInput) and exc.problems:
        body["problems"] = [{"where": w, "message": m} for w, m in exc.problems[:1000]]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status == 429:
        # Back-pressure, not a bad request: the SDKs wait this long and retry by themselves.
        headers["Retry-After"] = str(max(1, math.ceil(getattr(exc, "retry_after", 1) or 1)))
    elif status < 500:
        # OpenAI's SDKs retry 409s unless told not to; a repeat would fail the same way.
        headers["x-should-retry"] = "false"
    return JSONResponse(status_code=status, content={"error": body}, headers=headers)


_OPENAI_TYPE = {401: "authentication_error", 404: "invalid_request_error",
                429: "rate_limit_error", 500: "server_error"}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A malformed body: 422 as FastAPI does, but 400 on the OpenAI-compatible routes."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:])
    body = {"message": f"{where or 'request'}: {first.get('msg', 'invalid request')}",
            "type": "invalid_request_error", "param": where or None, "code": "invalid_request",
            # Without the offending input: it can be huge, or not text at all (lone surrogates).
            "problems": jsonable_encoder([{k: v for k, v in e.items() if k != "input"}
                                          for e in exc.errors()])}
    openai_route = request.url.path.startswith(("/v1/files", "/v1/batches", "/v1/models",
                                                "/v1/chat", "/v1/completions", "/v1/embeddings"))
    return JSONResponse(status_code=400 if openai_route else 422, content={"error": body},
                        headers={"x-should-retry": "false"})


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A body that cannot even be parsed (bad JSON bytes, broken multipart) gets the same error
    shape as every other /v1 error; the dashboard keeps FastAPI's own answers."""
    if not request.url.path.startswith("/v1/"):
        if exc.status_code == 404 and dashboard_ops.wants_html(request):
            return dashboard_ops.not_found(request)
        return await http_exception_handler(request, exc)
    body = {"message": str(exc.detail), "type": "invalid_request_error", "param": None,
            "code": _snake(type(exc).__name__) if exc.status_code >= 500 else "invalid_request"}
    return JSONResponse(status_code=exc.status_code, content={"error": body},
                        headers={**(exc.headers or {}), "x-should-retry": "false"})


"""The FastAPI app: one /v1 router behind a key, the dashboard, and one error model."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from nightowl import __version__
from nightowl_api import dashboard, errors, metrics, ops
from nightowl_api.deps import require_key, storable_body
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
# Every /v1 route needs a key; only /healthz and /metrics answer anonymous callers.
v1 = APIRouter(prefix="/v1", dependencies=[require_key, storable_body],
               responses=ERROR_RESPONSES)
# query before models: /v1/models/{id} would otherwise take /v1/models/compare for a model id.
for part in (jobs, query, models, openai_direct, responses, files, batches, finetunes,
             fine_tuning, schedules, workers):
    v1.include_router(part.router)
app.include_router(v1)
# Open like /healthz: Prometheus scrapes without a key, and it shows no tenant's data.
app.include_router(metrics.router)
# The web dashboard at / (its pages take the key from a cookie; see api/dashboard_auth.py).
dashboard.install(app)
app.add_middleware(QuotaHeadersMiddleware)
# The key and the body size are checked before anything reads the body.
app.add_middleware(GuardMiddleware)
# Outside the guard, so its 401 and 413 carry an x-request-id like every other answer.
app.add_middleware(RequestIdMiddleware)
errors.install(app)

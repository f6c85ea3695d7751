"""The FastAPI app: routes, and the translation of core errors into HTTP statuses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.routes import jobs, models
from nightowl import __version__
from nightowl.errors import (
    Conflict,
    InvalidInput,
    ModelLoadError,
    NightowlError,
    NotFound,
    Unauthorized,
)

app = FastAPI(
    title="nightowl",
    version=__version__,
    description="Bulk inference and fine-tunes for Transformer models.",
)
app.include_router(jobs.router)
app.include_router(models.router)

_STATUS = {NotFound: 404, InvalidInput: 400, ModelLoadError: 400, Conflict: 409,
           Unauthorized: 401}


@app.exception_handler(NightowlError)
async def _nightowl_error(_request: Request, exc: NightowlError) -> JSONResponse:
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    body: dict[str, object] = {"message": str(exc).split("\n")[0], "type": type(exc).__name__}
    if isinstance(exc, InvalidInput) and exc.problems:
        body["problems"] = [{"where": w, "message": m} for w, m in exc.problems[:1000]]
    return JSONResponse(status_code=status, content={"error": body})


@app.get("/healthz", tags=["ops"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}

"""Dashboard pages beside the data: the metrics a person reads (the same figures Prometheus
scrapes from /metrics, as a table) and a page for addresses that lead nowhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from nightowl_api.dashboard_auth import is_dashboard_path, logout_token
from nightowl_api.deps import TenantDep

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals["logout_token"] = logout_token


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not a script or an API client asking for JSON)."""
    if request.url.path.startswith(("/v1/", "/ui/api/")):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or is_dashboard_path(request.url.path)


def not_found(request: Request, detail: str | None = None) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "not_found.html", {"nav": "", "path": request.url.path, "detail": detail},
        status_code=404)


def _rows() -> list[dict[str, Any]]:
    from nightowl_api.metrics import registry

    rows: list[dict[str, Any]] = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket") or sample.name.endswith("_created"):
                continue  # histogram buckets read badly as rows; count and sum stay
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            value = sample.value
            rows.append({"name": sample.name, "help": family.documentation, "labels": labels,
                         "value": f"{value:.6g}" if isinstance(value, float) else str(value)})
    return rows


@router.get("/ui/metrics", response_class=HTMLResponse)
def metrics_page(request: Request, _tenant: TenantDep) -> HTMLResponse:
    """Queue depths, workers, jobs by status and item counts, as Prometheus sees them."""
    return templates.TemplateResponse(request, "metrics.html",
                                      {"nav": "metrics", "rows": _rows()})

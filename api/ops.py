"""Open operational routes: /healthz (database and broker) and the API docs at /docs and
/redoc, served from the fastapi-offline package's copies of Swagger UI 5 and ReDoc so they
render with no internet access (Swagger UI 4 cannot read the OpenAPI 3.1 FastAPI writes)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from nightowl.platform import broker
from nightowl.platform.db import session_factory
from nightowl_api.deps import SettingsDep

router = APIRouter()
DOCS_ASSETS = "/docs/assets"


def _assets_dir() -> Path:
    # Only its files are used; importing the package itself would pull in nothing else.
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the docs (the app is built with docs_url=None: FastAPI's own page loads a CDN)."""
    app.include_router(router)
    app.mount(DOCS_ASSETS, StaticFiles(directory=_assets_dir()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return _allow_inline_scripts(get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect"))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json",
                              title=f"{app.title} API", with_google_fonts=False,
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return _allow_inline_scripts(get_swagger_ui_oauth2_redirect_html())


def _allow_inline_scripts(page: HTMLResponse) -> HTMLResponse:
    """The docs pages start Swagger UI from an inline script, which the site-wide CSP
    (script-src 'self') blocks: allow exactly those scripts by their hash, nothing else."""
    body = bytes(page.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"
        for code in re.findall(r"<script>(.*?)</script>", body, flags=re.S))
    page.headers["content-security-policy"] = (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
    return page


@router.get("/healthz", tags=["ops"], responses={503: {"description": "A dependency is down"}})
def healthz(settings: SettingsDep) -> JSONResponse:
    """Readiness: the process answers, the database answers a query, the broker a ping."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        with session_factory(settings)() as session:
            session.execute(text("SELECT 1"))
    except Exception as e:  # any driver error means the database is not usable
        checks["database"] = f"down: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if not broker.ping(settings):
        checks["broker"] = "down: no answer to PING"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks},
                        status_code=200 if ok else 503)

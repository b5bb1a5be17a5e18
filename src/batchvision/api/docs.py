"""The API docs, `/docs` (Swagger UI) and `/redoc`, served with no network: their scripts and
styles are the ones the `fastapi-offline` wheel ships (MIT; Swagger UI and ReDoc inside are
Apache-2.0 and MIT), mounted under `/docs/assets`, so the pages render on an air-gapped box
where FastAPI's defaults (a CDN and Google Fonts) leave a blank page."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from batchvision.api.openapi import drop_unanswered_validation

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

# What the pages differ in from FastAPI's defaults, and why.
SWAGGER_PARAMETERS: dict[str, Any] = {
    # Swagger UI would send the spec to validator.swagger.io for its badge: nothing leaves.
    "validatorUrl": None,
    # No "persistAuthorization": a key typed into "Authorize" is not left in the browser's
    # local storage, where anyone at that browser later could read it.
    "displayRequestDuration": True,
}
# The pages may load nothing from elsewhere: ReDoc's sidebar credit always asks a CDN for its
# logo (an image it hides when missing), so the browser is told not to ask. Inline scripts and
# styles are the pages' own set-up (FastAPI's HTML) and ReDoc's styled components; ReDoc's
# search runs in a blob: worker.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
    )
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def _assets() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _document_only_what_is_answered(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        spec = generate()  # FastAPI builds it once and keeps it in app.openapi_schema
        if fresh:
            drop_unanswered_validation(spec)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add the two pages (and Swagger UI's OAuth2 redirect page, for the
    client-credentials flow a surface may declare). The app is made with `docs_url=None,
    redoc_url=None` so these are the only ones."""
    _document_only_what_is_answered(app)
    app.mount(ASSETS_URL, StaticFiles(directory=_assets()), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
        return _offline(page)

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        return _offline(page)

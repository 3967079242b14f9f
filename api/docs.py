"""Swagger UI (/docs) and ReDoc (/redoc) from files the package ships, so the docs work air-gapped.

FastAPI's own pages load their JavaScript, CSS, favicon and (ReDoc) fonts from CDNs. Here they
come from api/static/ (swagger-ui-dist and redoc from npm, with their licenses; api/static/README.md
says which versions and how to refresh them), and Swagger UI's validator badge, which would call
an online validator, is off. ReDoc's sidebar badge ("API docs by Redocly") shows a logo from
Redocly's CDN, which the Content-Security-Policy refuses (a console error, and a request attempted
on every load): the bundle is served with that one URL replaced by an empty data: URL, so the image
fails without a request and ReDoc's own onError drops it; the badge keeps its words.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "persistAuthorization": True, "displayRequestDuration": True, "validatorUrl": None}
REDOC_BUNDLE = STATIC_DIR / "redoc" / "redoc.standalone.js"
REDOC_JS_URL = "/redoc/redoc.standalone.js"
REDOC_REMOTE_LOGO, NO_IMAGE = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"', b'"data:,"'


@lru_cache(maxsize=1)
def redoc_bundle() -> bytes:
    """The vendored ReDoc (unchanged on disk) with its one remote asset, the badge's logo, taken out."""
    return REDOC_BUNDLE.read_bytes().replace(REDOC_REMOTE_LOGO, NO_IMAGE)


def install(app: FastAPI) -> None:
    """Mount the assets and add the two pages (create the app with docs_url=redoc_url=None)."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=None, swagger_ui_parameters=SWAGGER_UI_PARAMETERS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_JS_URL}",
            redoc_favicon_url=f"{root}{STATIC_URL}/swagger-ui/favicon-32x32.png", with_google_fonts=False)

    @app.get(REDOC_JS_URL, include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_bundle(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"})

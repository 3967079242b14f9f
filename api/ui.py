"""The dashboard at /ui: static files the package ships (api/static/ui/), no build step, no CDN.

The pages are one HTML shell and ES modules that call the same /v1 API as every client, with the
key the user enters kept in the tab's sessionStorage; nothing here reads a key or a database.
/ui redirects to /ui/, so that the pages' relative URLs (app.js, ../v1/...) work behind a path prefix
too. Files are revalidated on every load (no-cache): an upgraded server never runs yesterday's script.
"""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from .docs import STATIC_DIR

UI_DIR = STATIC_DIR / "ui"
UI_URL = "/ui"


class Revalidated(StaticFiles):
    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install(app: FastAPI) -> None:
    app.mount(UI_URL, Revalidated(directory=UI_DIR, html=True), name="ui")

"""/docs and /redoc work air-gapped: every script, style sheet and icon they load is served by the
service itself, and nothing in them points at another host."""
from __future__ import annotations

import pytest

from offline_support import EXTERNAL, loaded_by


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_what_the_service_serves(svc, page):
    fetched = loaded_by(svc.client, page)
    assert any(u.endswith(".js") for u in fetched) and len(fetched) >= 3
    html = fetched[page]
    assert EXTERNAL.findall(html) == [], "the page names another host"
    assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html


def test_redoc_is_served_without_its_badges_remote_logo(svc):
    """The bundle as served names no image on another host (the vendored file, unchanged, names one)."""
    bundle = svc.client.get("/redoc/redoc.standalone.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/javascript")
    assert b"cdn.redoc.ly" not in bundle.content and len(bundle.content) > 500_000
    assert 'src="/redoc/redoc.standalone.js"' in svc.client.get("/redoc").text


def test_swagger_ui_does_not_call_the_online_validator(svc):
    html = svc.client.get("/docs").text
    assert '"validatorUrl": null' in html
    assert "/openapi.json" in html


def test_the_vendored_assets_ship_with_their_licenses():
    from api.docs import STATIC_DIR
    for folder in ("swagger-ui", "redoc"):
        assert (STATIC_DIR / folder / "LICENSE").is_file(), folder

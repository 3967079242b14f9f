"""/docs and /redoc work air-gapped: every script, style sheet and icon they load is served by the
service itself, and nothing in them points at another host."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import pytest

EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+""")


class References(HTMLParser):
    """Every URL a page makes the browser load: src and href attributes."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def loaded_by(client, page: str) -> dict[str, str]:
    """page and every asset it references (and their CSS url()s) -> content, all fetched."""
    seen, todo = {}, [page]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        r = client.get(url)
        assert r.status_code == 200, f"{url} (referenced from {page}) answered {r.status_code}"
        seen[url] = r.text if not r.headers["content-type"].startswith("image/") else ""
        refs: list[str] = []
        if r.headers["content-type"].startswith("text/html"):
            parser = References()
            parser.feed(r.text)
            refs = parser.urls
        elif r.headers["content-type"].startswith("text/css"):
            refs = [u for u in re.findall(r"url\(['\"]?([^'\")]+)", r.text) if not u.startswith("data:")]
        for ref in refs:
            assert not urlparse(ref).netloc and not urlparse(ref).scheme, f"{url} loads {ref} from another host"
            todo.append(urljoin(url, ref))
    return seen


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_what_the_service_serves(svc, page):
    fetched = loaded_by(svc.client, page)
    assert any(u.endswith(".js") for u in fetched) and len(fetched) >= 3
    html = fetched[page]
    assert EXTERNAL.findall(html) == [], "the page names another host"
    assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html


def test_swagger_ui_does_not_call_the_online_validator(svc):
    html = svc.client.get("/docs").text
    assert '"validatorUrl": null' in html
    assert "/openapi.json" in html


def test_the_vendored_assets_ship_with_their_licenses():
    from api.docs import STATIC_DIR
    for folder in ("swagger-ui", "redoc"):
        assert (STATIC_DIR / folder / "LICENSE").is_file(), folder

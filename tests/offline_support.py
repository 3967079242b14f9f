"""What a page served by chainrule makes the browser load, fetched through the app: for the tests
that /docs, /redoc and /ui work air-gapped (nothing from another host)."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")
JS_IMPORT = re.compile(r"""(?:^|\n)\s*(?:import|export)\s[^;'"]*?from\s*["']([^"']+)["']""")


class References(HTMLParser):
    """Every URL a page makes the browser load (src, and <link>'s href), and its inline scripts
    and inline event handlers (which a Content-Security-Policy of script-src 'self' refuses)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        loads = ("src", "href") if tag == "link" else ("src",)    # a link (<a href>) is not loaded
        self.urls += [value for name, value in attrs if name in loads and value]
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self._in_script = tag == "script" and not dict(attrs).get("src")

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag):
        self._in_script = False


def loaded_by(client, page: str) -> dict[str, str]:
    """page and every asset it references (their CSS url()s and JavaScript module imports too)
    -> content, all fetched and answered 200."""
    seen, todo = {}, [page]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        r = client.get(url)
        assert r.status_code == 200, f"{url} (referenced from {page}) answered {r.status_code}"
        kind = r.headers["content-type"]
        seen[url] = r.text if not kind.startswith("image/") else ""
        refs: list[str] = []
        if kind.startswith("text/html"):
            parser = References()
            parser.feed(r.text)
            refs = parser.urls
        elif kind.startswith("text/css"):
            refs = [u for u in re.findall(r"url\(['\"]?([^'\")]+)", r.text) if not u.startswith("data:")]
        elif "javascript" in kind:
            refs = JS_IMPORT.findall(r.text)
        for ref in refs:
            assert not urlparse(ref).netloc and not urlparse(ref).scheme, f"{url} loads {ref} from another host"
            todo.append(urljoin(url, ref))
    return seen

"""/ui works air-gapped and under a Content-Security-Policy of script-src 'self': every script,
module, style sheet and icon it loads is served by the service, no file it serves names another
host, it runs no inline script or handler and no eval, and the vendored chart library ships with
its license. (tests/service/test_dashboard_browser.py runs it in Chromium.)"""
from __future__ import annotations

import re

from offline_support import EXTERNAL, References, loaded_by

from api.ui import UI_DIR

LICENSE_COMMENT = re.compile(r"^/\*!.*?\*/", re.S)   # a vendored file's leading license banner


def test_ui_redirects_to_its_folder_and_serves_the_shell(svc):
    r = svc.client.get("/ui", follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/ui/")
    page = svc.client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"


def test_the_dashboard_loads_only_what_the_service_serves(svc):
    fetched = loaded_by(svc.client, "/ui/")
    modules = {u.rsplit("/", 1)[-1] for u in fetched if u.endswith(".js")}
    assert {"app.js", "api.js", "sse.js", "charts.js", "heatmap.js", "jobs.js", "job.js", "compare.js",
            "datasets.js", "landscape.js", "uPlot.iife.min.js"} <= modules
    for url, text in fetched.items():
        assert EXTERNAL.findall(LICENSE_COMMENT.sub("", text)) == [], f"{url} names another host"


def test_every_file_the_dashboard_ships_is_free_of_other_hosts():
    files = [p for p in UI_DIR.rglob("*") if p.is_file() and p.suffix in (".html", ".js", ".css", ".md")]
    assert len(files) >= 13
    for path in files:
        assert EXTERNAL.findall(LICENSE_COMMENT.sub("", path.read_text())) == [], path


def test_no_inline_script_handler_or_eval():
    parser = References()
    parser.feed((UI_DIR / "index.html").read_text())
    assert parser.inline_scripts == 0 and parser.handlers == []
    for path in UI_DIR.rglob("*.js"):
        text = path.read_text()
        assert "eval(" not in text and "new Function" not in text, path
        assert ".innerHTML" not in text, f"{path}: pages are built with DOM calls, never parsed from data"


def test_the_chart_library_ships_with_its_license():
    vendored = UI_DIR / "vendor" / "uplot"
    assert "MIT" in (vendored / "LICENSE").read_text() or "Permission is hereby granted" in (vendored / "LICENSE").read_text()
    assert (vendored / "uPlot.iife.min.js").read_text().startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32)")

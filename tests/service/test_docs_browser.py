"""/docs and /redoc in a real browser (Debian's Chromium through Playwright) under the service's own
Content-Security-Policy: each renders the API, asks nothing of any host but the service, and logs no
error to the console (ReDoc's "API docs by Redocly" badge used to fetch its logo from a CDN, which
the policy refused with a console error)."""
from __future__ import annotations

import threading

import pytest
import uvicorn

from browser_support import Recorder, launch, wait_until
from e2e_support import CEILING_S, HANG_GUARD_S, LOOPBACK, free_port, missing, wait_for

pytestmark = pytest.mark.timeout(HANG_GUARD_S)


@pytest.fixture
def base_url(svc):
    """The service's app on a real uvicorn server, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(svc.client.app, host=LOOPBACK, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, CEILING_S, what="uvicorn to start")
    yield f"http://{LOOPBACK}:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package", "the test extra: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path_factory.mktemp("chromium-profile"))
        context.recorder = Recorder().attach(context)
        yield context
        context.close()


def test_redoc_renders_the_api_with_nothing_from_another_host_and_no_console_error(browser, base_url):
    page = browser.new_page()
    page.goto(f"{base_url}/redoc")
    wait_until(page, "() => document.querySelector('.api-content')?.textContent.includes('Submit a training job')")
    # the badge renders after ReDoc mounts; its logo either loads from here or is dropped
    wait_until(page, "() => { const a = document.querySelector('a[href*=\"redocly.com\"]'); if (!a) return false;"
                     " const img = a.querySelector('img'); return !img || img.complete; }")
    page.wait_for_load_state("networkidle")
    assert "API docs by Redocly" in page.inner_text(".menu-content")
    browser.recorder.check()            # no console error, no request off 127.0.0.1
    assert any(url.endswith("/redoc/redoc.standalone.js") for url, _ in browser.recorder.requests)


def test_swagger_ui_renders_the_api_with_nothing_from_another_host_and_no_console_error(browser, base_url):
    page = browser.new_page()
    page.goto(f"{base_url}/docs")
    page.wait_for_selector(".opblock-summary")
    page.wait_for_load_state("networkidle")
    assert page.locator(".opblock-summary").count() > 10
    browser.recorder.check()

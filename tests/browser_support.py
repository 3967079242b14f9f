"""A real browser for the dashboard's tests: Debian's Chromium driven by Playwright.

Never `playwright install` (it downloads a browser build): the browser is /usr/bin/chromium from
Debian's package (scripts/test.sh installs it when missing), started headless with a fresh profile
and with everything that would call home turned off. Without it the browser tests skip on a
developer machine and fail in CI (tests/e2e_support.py `missing`).

A Recorder keeps every request the pages make and every console error, for the tests to assert
that nothing leaves 127.0.0.1 and that the pages log no error. `shoot` saves a screenshot of the
page at 1280x800 and at a 400 px wide window (the test artifacts) and checks nothing overflows.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from e2e_support import CEILING_S, LOOPBACK, missing, wait_for

CHROMIUM = os.environ.get("CHAINRULE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDE, NARROW = {"width": 1280, "height": 800}, {"width": 400, "height": 800}
ARTIFACTS = Path(os.environ.get("CHAINRULE_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts") / "dashboard"


def launch(playwright, profile: Path):
    """A browser context on a fresh profile directory; a failure to start is a skip, or in CI a failure.
    Every wait of its pages (navigation, a selector, a click) is for an event, with CEILING_S as its
    ceiling rather than Playwright's 30 s, which a loaded machine can exceed."""
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        missing(f"Chromium ({CHROMIUM})", "Debian's chromium package (scripts/test.sh does as root)")
    try:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport=WIDE,
            accept_downloads=True)
    except Exception as exc:   # playwright's Error: the browser did not start
        missing(f"a Chromium that starts ({type(exc).__name__}: {str(exc)[:500]})",
                "Debian's chromium package and its libraries")
    context.set_default_timeout(CEILING_S * 1000)
    return context


@dataclass
class Recorder:
    """What the pages of one browser context did: requests (URL, Authorization header) and errors."""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)   # errors a test provokes on purpose (a wrong key's 401)

    def attach(self, context) -> "Recorder":
        context.on("request", lambda r: self.requests.append((r.url, r.headers.get("authorization"))))
        context.on("page", self.watch)
        for page in context.pages:
            self.watch(page)
        return self

    def watch(self, page) -> None:
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def hosts(self) -> set[str]:
        """The host of every request, data: and blob: URLs (no network) left out."""
        return {urlparse(url).hostname for url, _ in self.requests if urlparse(url).scheme in ("http", "https", "ws", "wss")} \
            | {url for url, _ in self.requests if urlparse(url).scheme not in ("http", "https", "ws", "wss", "data", "blob")}

    def expect(self, text: str) -> None:
        """The browser logs an error status as a console error: one the test provokes is not a fault."""
        self.expected.append(text)

    def check(self) -> None:
        """Nothing left 127.0.0.1 and nothing was logged as an error but what was expected; then reset."""
        errors = [e for e in self.errors if not any(text in e for text in self.expected)]
        self.errors, self.expected = [], []
        assert self.hosts() <= {LOOPBACK}, f"requests left {LOOPBACK}: {sorted(self.hosts())}"
        assert errors == [], errors


def wait_until(page, function: str, arg=None, timeout_s: float = CEILING_S):
    """Poll a JavaScript function of `arg` until it returns something truthy; returns it.

    Not Playwright's wait_for_function: it evaluates its predicate with eval() inside the page,
    which the service's Content-Security-Policy (no 'unsafe-eval') refuses; page.evaluate is not
    subject to it."""
    return wait_for(lambda: page.evaluate(function, arg), timeout_s, 0.05, f"{function} ({arg!r})")


def wait_ready(page, name: str | None = None, timeout_s: float = CEILING_S) -> None:
    """The page (`name`: that page, after an in-app navigation) drew what it first loaded: app.js
    sets window.__chainrule.page and .ready."""
    wait_until(page, "(name) => window.__chainrule !== undefined && window.__chainrule.ready === true && "
                     "(name === null || window.__chainrule.page === name)", name, timeout_s)


def state(page, expression: str):
    """A value from the dashboard's debug object, e.g. state(page, "charts.loss.points")."""
    return page.evaluate(f"(() => {{ try {{ return window.__chainrule.{expression}; }} catch (e) {{ return null; }} }})()")


def sign_in(page, base_url: str, key: str) -> None:
    page.goto(f"{base_url}/ui/")
    page.fill("#key-input", key)
    page.click("form.key-form button[type=submit]")
    page.wait_for_selector("#jobs-table, .notice")
    wait_ready(page)


def goto(page, base_url: str, route: str) -> None:
    page.goto(f"{base_url}/ui/{route}")
    wait_ready(page)


def shoot(page, name: str) -> list[Path]:
    """Screenshots at 1280x800 and 400 px wide (full page) into ARTIFACTS; neither may scroll sideways."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    saved = []
    for size, suffix in ((WIDE, ""), (NARROW, "-narrow")):
        page.set_viewport_size(size)
        # charts follow their container's width: the resize's layout, its ResizeObserver callbacks
        # (which resize the charts) and the layout after them are done two frames later, however slow
        page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
        overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {size['width']} px is {overflow} px wider than the window"
        path = ARTIFACTS / f"{name}{suffix}.png"
        page.screenshot(path=str(path), full_page=True)
        saved.append(path)
    page.set_viewport_size(WIDE)
    return saved

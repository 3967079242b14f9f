"""Dashboard load time: how long each page of /ui takes to show a 200-epoch job, in Chromium.

    python bench/ui_load.py                    # 200 epochs, 5 loads per page
    python bench/ui_load.py --epochs 1000 --loads 10 --json ui_load.json

The real service on 127.0.0.1 (`chainrule serve`, started by tests/e2e_support.py's Stack, so
pytest must be importable) trains two jobs of `--epochs` epochs on generated blobs (a 6-linear-
layer ReLU MLP: 6 heat-map rows, 6 update-ratio series); then Debian's Chromium, headless through
Playwright (tests/browser_support.py), opens each page `--loads` times. Measured per page, from
the navigation's start (performance.now()):
  - ready: what the page first loads (the job, its metrics, ...) is in its charts and tables;
  - drawn: the animation frame after that, when the browser paints it;
  - DOMContentLoaded and the bytes the page fetched (transfer sizes, Resource Timing).
The first load of each page runs in a fresh browser profile (cold: nothing cached), the others are
reloads (the static files revalidated: 304s). Median and max are printed; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_support import launch, wait_until  # noqa: E402
from e2e_support import Stack, blobs_csv  # noqa: E402

MLP = [layer for _ in range(5) for layer in ({"type": "linear", "out_features": 32}, {"type": "relu"})] + \
    [{"type": "linear", "out_features": 3}]
TIMING = """() => ({
  ready: window.__chainrule.readyAt, drawn: window.__chainrule.drawnAt,
  dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
  bytes: performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize, 0)
         + performance.getEntriesByType('navigation')[0].transferSize,
  requests: performance.getEntriesByType('resource').length})"""


def train(stack: Stack, epochs: int) -> list[str]:
    dataset = stack.upload_csv(blobs_csv(n=2000), "blobs")
    ids = []
    for name, optimizer in (("adam", {"type": "adam", "lr": 0.001}), ("sgd", {"type": "sgd", "lr": 0.05})):
        job = stack.submit(dataset["id"], name=f"bench-{name}", tags=["bench"], epochs=epochs, batch_size=128,
                           model={"layers": MLP}, optimizer=optimizer)
        ids.append(job["id"])
    for job_id in ids:
        done = stack.wait_job(job_id, timeout=600, watch=("serve",))
        assert done["status"] == "succeeded", done
    return ids


def load(page, url: str) -> dict:
    """Navigate to url (a full load) and wait until its first data is painted."""
    page.goto("about:blank")
    page.goto(url)
    wait_until(page, "() => window.__chainrule !== undefined && typeof window.__chainrule.drawnAt === 'number'",
               timeout_s=120)
    return page.evaluate(TIMING)


def measure(playwright, stack: Stack, routes: dict[str, str], loads: int, root: Path) -> dict[str, dict]:
    results = {}
    for name, route in routes.items():
        context = launch(playwright, Path(tempfile.mkdtemp(dir=root)))   # cold: a fresh profile per page
        # the key as the key form leaves it, without loading the page first (the first load stays cold)
        context.add_init_script(f"sessionStorage.setItem('chainrule.key', {json.dumps(stack.key)})")
        page = context.new_page()
        runs = [load(page, f"{stack.api_url}/ui/{route}") for _ in range(loads)]
        context.close()
        results[name] = {"cold": runs[0], "warm": runs[1:]}
    return results


def summarise(results: dict[str, dict]) -> list[str]:
    lines = [f"{'page':<10} {'cold ready':>11} {'cold drawn':>11} {'warm drawn (median / max)':>27} "
             f"{'DOMContentLoaded':>17} {'bytes (cold)':>13}"]
    for name, r in results.items():
        warm = [w["drawn"] for w in r["warm"]] or [r["cold"]["drawn"]]
        lines.append(f"{name:<10} {r['cold']['ready']:>9.0f}ms {r['cold']['drawn']:>9.0f}ms "
                     f"{statistics.median(warm):>15.0f} / {max(warm):>5.0f}ms "
                     f"{statistics.median([w['dcl'] for w in r['warm']] or [r['cold']['dcl']]):>15.0f}ms "
                     f"{r['cold']['bytes']:>13,}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--loads", type=int, default=5, help="loads per page (the first is cold)")
    parser.add_argument("--json", type=Path, help="write the raw timings here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chainrule-ui-bench-") as tmp:
        stack = Stack(Path(tmp) / "stack")
        try:
            stack.create_key_in_process()
            stack.start_serve()
            stack.wait_api(name="serve")
            started = time.monotonic()
            adam, sgd = train(stack, args.epochs)
            print(f"trained two {args.epochs}-epoch jobs in {time.monotonic() - started:.1f} s", flush=True)
            routes = {"jobs": "#/jobs", "job": f"#/jobs/{adam}", "compare": f"#/compare?ids={adam},{sgd}",
                      "datasets": "#/datasets"}
            with sync_playwright() as playwright:
                results = measure(playwright, stack, routes, args.loads, Path(tmp))
        finally:
            stack.close()
    print(f"/ui with {args.epochs}-epoch jobs, {args.loads} loads per page (ms from navigation start)")
    print("\n".join(summarise(results)))
    if args.json:
        args.json.write_text(json.dumps({"epochs": args.epochs, "results": results}, indent=2))


if __name__ == "__main__":
    main()

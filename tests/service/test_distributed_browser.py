"""The job page of a two-process job (issue 19) in a real browser against `chainrule serve`: it shows the
world size and each rank's step time of the latest epoch, the numbers the API gives."""
from __future__ import annotations

import pytest

from browser_support import Recorder, goto, launch, sign_in
from e2e_support import Stack, blobs_csv, missing

pytestmark = pytest.mark.timeout(240)


def test_the_job_page_shows_the_world_size_and_the_step_time_per_rank(tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package", "the test extra: pip install -e '.[test]'")
    stack = Stack(tmp_path / "stack")
    try:
        stack.create_key_in_process()
        stack.start_serve()
        stack.wait_api(name="serve")
        dataset = stack.upload_csv(blobs_csv(n=160), "blobs")
        job = stack.submit(dataset["id"], epochs=2, batch_size=16, device="cpu", distributed={"processes": 2})
        job = stack.wait_job(job["id"], timeout=180, watch=("serve",))
        assert job["status"] == "succeeded"
        times = job["latest_metrics"]["rank_step_time_s"]
        with sync_playwright() as playwright:
            context = launch(playwright, tmp_path / "chromium-profile")
            recorder = Recorder().attach(context)
            page = context.new_page()
            sign_in(page, stack.api_url, stack.key)
            goto(page, stack.api_url, f"#/jobs/{job['id']}")
            header = page.locator("#job-header")
            facts = dict(zip(header.locator("dt").all_inner_texts(), header.locator("dd").all_inner_texts()))
            context.close()
            recorder.check()
        assert facts["processes"] == "2"
        assert facts["step time per rank"] == ", ".join(f"{rank}: {t * 1000:.1f} ms" for rank, t in enumerate(times))
    finally:
        stack.close()

"""A GPT's job page in a real browser: perplexity curves, gradient norm per block, each head's attention
entropy over epochs, and the attention map of the validation text per layer and head. What the page
shows is compared with the API's own numbers."""
from __future__ import annotations

import math

import pytest

from browser_support import goto, shoot, sign_in, state, wait_until
from e2e_support import HANG_GUARD_S, Stack
from sequence_support import gpt
from test_dashboard_browser import browser, page  # noqa: F401  (fixtures: Chromium, a checked tab)

pytestmark = pytest.mark.timeout(HANG_GUARD_S)
TEXT = "The bore is a person who talks when you wish him to listen. " * 20
CONTEXT = 16
EPOCHS = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("dashboard-gpt"), events_poll_interval_s=0.2)
    try:
        stack.create_key_in_process()
        stack.start_serve()
        stack.wait_api(name="serve")
        r = stack.http.post("/v1/datasets", files={"file": ("bore.txt", TEXT.encode(), "text/plain")},
                            data={"name": "bore", "tokenizer": "char"})
        assert r.status_code == 201, r.text
        vocab = r.json()["vocab_size"]
        job = stack.submit(r.json()["id"], name="bore-gpt", context_length=CONTEXT,
                           model=gpt(vocab=vocab, dim=16, context=CONTEXT, blocks=2, heads=2, init_std=0.02),
                           optimizer={"type": "adamw", "lr": 0.01}, epochs=EPOCHS, batch_size=8, steps_per_epoch=10,
                           validation_split=0.2)
        assert stack.wait_job(job["id"], watch=("serve",))["status"] == "succeeded"
        stack.job_id = job["id"]
        yield stack
    except BaseException:
        print(stack.dump_logs())
        raise
    finally:
        stack.close()


def block_norms(epoch: dict) -> dict[str, float]:
    """The API's per-layer gradient norms of one epoch, grouped as the page groups them."""
    out: dict[str, float] = {}
    for key, entry in epoch["layers"].items():
        if "grad_norm" in entry:
            parts = key.split(".")
            row = ".".join(parts[:2]) if len(parts) == 3 and parts[1].isdigit() else f"{key} {entry['type']}"
            out[row] = out.get(row, 0.0) + entry["grad_norm"] ** 2
    return {row: math.sqrt(v) for row, v in out.items()}


def test_a_gpts_page_shows_perplexity_blocks_entropy_and_attention_maps(page, served):  # noqa: F811
    epochs = served.http.get(f"/v1/jobs/{served.job_id}/metrics").json()["epochs"]
    maps = served.http.get(f"/v1/jobs/{served.job_id}/attention").json()
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{served.job_id}")

    assert state(page, "charts.perplexity.series") == {"train_perplexity": EPOCHS, "val_perplexity": EPOCHS}
    assert state(page, "charts.perplexity.last") == {k: epochs[-1][k] for k in ("train_perplexity", "val_perplexity")}

    blocks = state(page, "heatmaps.block_grad_norms")
    grouped = [block_norms(e) for e in epochs]
    assert blocks["rows"] == list(grouped[0]) and "blocks.0" in blocks["rows"] and "blocks.1" in blocks["rows"]
    values = [v for g in grouped for v in g.values()]
    assert blocks["lo"] == pytest.approx(min(values), rel=1e-9) and blocks["hi"] == pytest.approx(max(values), rel=1e-9)

    heads = [f"blocks.{b}.attn head {h}" for b in (0, 1) for h in (0, 1)]
    assert state(page, "charts.attention_entropy.series") == {**{h: EPOCHS for h in heads}, "uniform": EPOCHS}

    wait_until(page, "() => window.__chainrule.heatmaps.attention_map.rows.length > 0")
    shown_map = state(page, "heatmaps.attention_map")
    assert shown_map["rows"] == [t.replace(" ", "␣") for t in maps["tokens"]] and shown_map["cols"] == CONTEXT
    assert float(page.get_attribute("#attention .charts[data-entropy]", "data-entropy")) == maps["layers"][0]["entropy"][0]
    assert f"epoch {EPOCHS}" in page.inner_text("#attention-source")

    page.select_option("#attention-layer", "blocks.1.attn")
    page.select_option("#attention-head", "1")
    wait_until(page, "(e) => document.querySelector('#attention .charts[data-entropy]').dataset.entropy === e",
               str(maps["layers"][1]["entropy"][1]))
    assert "blocks.1.attn head 1" in page.inner_text("#attention-source")
    shoot(page, "job-gpt")

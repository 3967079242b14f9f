"""The dashboard in a real browser (Debian's Chromium, through Playwright) against a real
`chainrule serve` training real jobs. Assertions read the charts' data (window.__chainrule, the
chart elements' data attributes), not pixels. Every request the pages make is recorded: none may
leave 127.0.0.1, none may carry the key in its URL, and no page may log an error. Screenshots of
every page, wide and narrow, go to tests/artifacts/dashboard/ (or $CHAINRULE_TEST_ARTIFACTS)."""
from __future__ import annotations

import json
import struct
import subprocess

import httpx
import pytest

from browser_support import Recorder, goto, launch, shoot, sign_in, state, wait_ready, wait_until
from e2e_support import CEILING_S, HANG_GUARD_S, Stack, blobs_csv, chainrule_cmd, missing, wait_for

pytestmark = pytest.mark.timeout(HANG_GUARD_S)

THREE_LINEAR = [{"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "linear", "out_features": 16},
                {"type": "relu"}, {"type": "linear", "out_features": 3}]
# a deliberately bad network: deep and sigmoid all the way, its gradient vanishes toward the input
DEEP_SIGMOID = [layer for _ in range(8) for layer in ({"type": "linear", "out_features": 16}, {"type": "sigmoid"})] + \
    [{"type": "linear", "out_features": 3}]
JOB = {"loss": "cross_entropy", "epochs": 12, "batch_size": 32, "validation_split": 0.25, "seed": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One `chainrule serve` with a dataset and three finished jobs: Adam and SGD on the same data
    (for compare) and the deep sigmoid network."""
    stack = Stack(tmp_path_factory.mktemp("dashboard"), events_poll_interval_s=0.2)
    try:
        stack.create_key_in_process()
        stack.start_serve()
        stack.wait_api(name="serve")
        dataset = stack.upload_csv(blobs_csv(), "blobs")
        jobs = {"adam": stack.submit(dataset["id"], **JOB, name="blobs-adam", tags=["compare", "adam"],
                                     model={"layers": THREE_LINEAR}, optimizer={"type": "adam", "lr": 0.01}),
                "sgd": stack.submit(dataset["id"], **JOB, name="blobs-sgd", tags=["compare", "sgd"],
                                    model={"layers": THREE_LINEAR}, optimizer={"type": "sgd", "lr": 0.05}),
                "sigmoid": stack.submit(dataset["id"], **JOB, name="deep-sigmoid", tags=["bad"],
                                        model={"layers": DEEP_SIGMOID}, optimizer={"type": "sgd", "lr": 0.1})}
        for job in jobs.values():
            assert stack.wait_job(job["id"], watch=("serve",))["status"] == "succeeded"
        stack.dataset, stack.jobs = dataset, {k: v["id"] for k, v in jobs.items()}
        yield stack
    except BaseException:
        print(stack.dump_logs())
        raise
    finally:
        stack.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package", "the test extra: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path_factory.mktemp("chromium-profile"))
        recorder = Recorder().attach(context)
        context.recorder = recorder
        yield context
        context.close()


@pytest.fixture
def page(browser, served):
    """A fresh tab (its own sessionStorage) whose requests and console errors are checked after the test."""
    tab = browser.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())   # the cancel button's confirmation
    seen = len(browser.recorder.requests)
    yield tab
    tab.close()
    browser.recorder.check()
    leaked = [url for url, _ in browser.recorder.requests[seen:] if served.key in url]
    assert leaked == [], f"the key went into a URL: {leaked}"


def test_the_key_form_keeps_the_key_in_session_storage_and_sends_it_as_a_bearer(page, served, browser):
    page.goto(f"{served.api_url}/ui")
    wait_ready(page)
    shoot(page, "key-form")
    browser.recorder.expect("status of 401")
    page.fill("#key-input", "cr_not_a_key")
    page.click("form.key-form button[type=submit]")
    page.wait_for_selector(".key-form [role=alert]:not([hidden])")
    assert "invalid API key" in page.inner_text(".key-form [role=alert]")
    assert page.evaluate("sessionStorage.length") == 0

    sign_in(page, served.api_url, served.key)
    assert page.evaluate("sessionStorage.getItem('chainrule.key')") == served.key
    assert served.key not in page.url
    api_calls = [(url, auth) for url, auth in browser.recorder.requests if "/v1/" in url]
    assert api_calls and all(auth in (f"Bearer {served.key}", "Bearer cr_not_a_key") for _, auth in api_calls)
    page.click("#signout")
    page.wait_for_selector("#key-input")
    assert page.evaluate("sessionStorage.length") == 0


def test_the_jobs_list_shows_each_job_and_filters_by_tag_and_status(page, served):
    sign_in(page, served.api_url, served.key)
    rows = page.locator("#jobs-table tbody tr")
    assert rows.count() == 3
    row = page.locator(f"tr[data-job='{served.jobs['adam']}']")
    text = row.inner_text()
    assert "blobs-adam" in text and "succeeded" in text and "adam" in text and "epoch 12 / 12" in text
    assert "accuracy" in text
    shoot(page, "jobs")
    page.fill("#filter-tag", "sgd")
    page.press("#filter-tag", "Enter")
    wait_until(page, "() => document.querySelectorAll('#jobs-table tbody tr').length === 1")
    assert "blobs-sgd" in page.inner_text("#jobs-table") and "tag=sgd" in page.url
    page.select_option("#filter-status", "failed")
    page.wait_for_selector(".notice")
    assert "No jobs match" in page.inner_text("main")


def test_the_heatmap_has_one_row_per_layer_with_parameters(page, served):
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{served.jobs['adam']}")
    heatmap = state(page, "heatmaps.grad_norms")
    assert heatmap["rows"] == ["0 linear", "2 linear", "4 linear"] and heatmap["cols"] == 12
    assert 0 < heatmap["lo"] <= heatmap["hi"]
    assert state(page, "charts.loss.series") == {"train_loss": 12, "val_loss": 12}
    assert state(page, "charts.metric.series") == {"train_accuracy": 12, "val_accuracy": 12}
    assert list(state(page, "charts.update_ratios.series")) == ["0 linear", "2 linear", "4 linear"]
    canvas = page.locator("[data-heatmap=grad_norms] canvas")
    canvas.hover(position={"x": canvas.bounding_box()["width"] * 0.5, "y": 14})   # a cell of the first row
    assert page.inner_text("[data-heatmap=grad_norms] .readout").startswith("layer 0 linear · epoch ")
    assert "grad norm" in page.inner_text("[data-heatmap=grad_norms] .readout")
    with page.expect_download() as download:
        page.click("#download-weights")
    weights = open(download.value.path(), "rb").read()
    header = json.loads(weights[8:8 + struct.unpack("<Q", weights[:8])[0]])
    assert {"0.weight", "0.bias", "2.weight", "4.weight"} <= set(header)
    shoot(page, "job")


def test_a_running_jobs_curves_grow_from_the_events_stream_until_cancelled(page, served):
    long = served.submit(served.dataset["id"], **{**JOB, "epochs": 20000}, name="long", tags=["live"],
                         model={"layers": THREE_LINEAR}, optimizer={"type": "adam", "lr": 0.001})
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{long['id']}")
    first = wait_for(lambda: state(page, "charts.loss.points") or None, CEILING_S, 0.1, "a first epoch on the page")
    # one read of the page for all three: the job keeps running, so separate reads could straddle an epoch
    snapshot = ("(() => { const d = window.__chainrule; return {points: d.charts.loss.points, "
                "series: d.charts.loss.series.train_loss, cols: d.heatmaps.grad_norms.cols}; })()")
    seen = wait_for(lambda: (now := page.evaluate(snapshot))["points"] > first and now, CEILING_S, 0.1,
                    "the curve to grow")
    assert seen["series"] == seen["points"]
    assert seen["cols"] >= seen["points"]
    assert page.get_attribute("#job-progress", "value") not in (None, "0")
    assert "running" in page.inner_text("#job-header .status")
    shoot(page, "job-running")
    page.click("#cancel-job")
    page.wait_for_selector("#job-header [data-status=cancelled]", timeout=CEILING_S * 1000)
    assert served.job(long["id"])["status"] == "cancelled"


def test_a_vanishing_gradient_shows_in_the_heatmap(page, served):
    """The deep sigmoid network's gradient vanishes toward the input: its heat map has a row per
    linear layer, the first one's gradient norm orders of magnitude below the last one's."""
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{served.jobs['sigmoid']}")
    heatmap = state(page, "heatmaps.grad_norms")
    assert heatmap["rows"] == [f"{k} linear" for k in range(0, 17, 2)]
    last = served.http.get(f"/v1/jobs/{served.jobs['sigmoid']}/metrics").json()["epochs"][-1]["layers"]
    assert last["0"]["grad_norm"] < last["16"]["grad_norm"] / 100
    assert heatmap["hi"] / heatmap["lo"] > 100          # the colour scale spans those decades
    shoot(page, "job-bad-network")


def test_findings_of_a_bad_network_are_listed_and_marked_on_the_curves(page, served):
    """The diagnostics rules' findings: listed, and marked on the loss curve at their epochs."""
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{served.jobs['sigmoid']}")
    page.wait_for_selector("#findings-table tr.finding")
    codes = page.locator("#findings-table tr.finding").evaluate_all("rows => rows.map(r => r.dataset.code)")
    assert "vanishing_gradient" in codes
    assert "vanishing_gradient" in {m["label"] for m in state(page, "charts.loss.markers")}
    shoot(page, "job-findings")
    counts = served.http.get(f"/v1/jobs/{served.jobs['sigmoid']}").json()["findings"]["counts"]
    goto(page, served.api_url, "#/jobs")                      # the list says how many, by severity
    listed = page.inner_text(f"tr[data-job='{served.jobs['sigmoid']}'] .finding-count")
    assert f"{counts['warning']} warning" in listed and counts["warning"] >= 1


def test_the_job_page_shows_the_apis_numbers(page, served):
    """Every number the job page prints or plots is the API's, at the 4 significant digits the page
    shows: the init table (activation std is the report's output_std), the gradient heat map's cells
    and colour scale, the update-ratio and saturation lines, the curves' last points, the latest
    losses and each finding's epoch, rule and value."""
    job_id = served.jobs["sigmoid"]
    job = served.http.get(f"/v1/jobs/{job_id}").json()
    epochs = served.http.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
    findings = served.http.get(f"/v1/jobs/{job_id}/findings", params={"limit": 100}).json()["items"]
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{job_id}")

    init = job["init_report"]["layers"]
    shown = _rows(page, "#init-table tbody tr")
    assert [row[1] for row in shown] == [f"{key} {layer['type']}" for key, layer in init.items()]
    for (_, _, activation_std, grad_std), layer in zip(shown, init.values()):
        assert _shown(activation_std) == pytest.approx(layer["output_std"], rel=1e-3)
        assert _shown(grad_std) == (pytest.approx(layer["grad_std"], rel=1e-3) if "grad_std" in layer else None)

    last, heatmap = epochs[-1], state(page, "heatmaps.grad_norms")
    norms = [e["layers"][key]["grad_norm"] for e in epochs for key in e["layers"] if "grad_norm" in e["layers"][key]]
    assert heatmap["lo"] == pytest.approx(min(norms), rel=1e-12) and heatmap["hi"] == pytest.approx(max(norms), rel=1e-12)
    box, rows, cols = heatmap["box"], heatmap["rows"], heatmap["cols"]
    canvas = page.locator("[data-heatmap=grad_norms] canvas")
    for row, col in ((0, cols - 1), (len(rows) - 1, 0), (len(rows) // 2, cols // 2)):
        canvas.hover(position={"x": box["left"] + (col + 0.5) * box["width"] / cols,
                               "y": box["top"] + (row + 0.5) * box["height"] / len(rows)})
        key, epoch = rows[row].split()[0], epochs[col]["epoch"]
        readout = page.inner_text("[data-heatmap=grad_norms] .readout")
        assert readout.startswith(f"layer {rows[row]} · epoch {epoch}: grad norm "), readout
        assert _shown(readout.rsplit(" ", 1)[1]) == pytest.approx(epochs[col]["layers"][key]["grad_norm"], rel=1e-3)
    ratios, fractions = state(page, "charts.update_ratios.last"), state(page, "charts.fractions.last")
    assert ratios == {f"{k} {v['type']}": pytest.approx(v["update_ratio"], rel=1e-12)
                      for k, v in last["layers"].items() if "update_ratio" in v}
    assert fractions == {f"{k} {v['type']} saturated": pytest.approx(v["saturated_fraction"], rel=1e-12)
                         for k, v in last["layers"].items() if "saturated_fraction" in v}

    for chart, names in (("loss", ("train_loss", "val_loss")), ("metric", ("train_accuracy", "val_accuracy")),
                         ("lr", ("lr",))):
        assert state(page, f"charts.{chart}.last") == {n: pytest.approx(last[n], rel=1e-12) for n in names}
    header = page.locator("#job-header")
    facts = dict(zip(header.locator("dt").all_inner_texts(), header.locator("dd").all_inner_texts()))
    for label, name in (("latest train loss", "train_loss"), ("latest val loss", "val_loss")):
        assert _shown(facts[label]) == pytest.approx(job["latest_metrics"][name], rel=1e-3)

    shown = _rows(page, "#findings-table tr.finding")
    assert len(shown) == len(findings) >= 1
    for (epoch, severity, code, _, value, _), finding in zip(shown, findings):
        assert (int(epoch), code) == (finding["epoch"], finding["code"]) and finding["severity"] in severity
        assert _shown(value.split(" (threshold")[0]) == pytest.approx(finding["value"], rel=1e-3)


def _rows(page, selector: str) -> list[list[str]]:
    """Each matching table row's cells, as the page shows them."""
    return page.locator(selector).evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")


def _shown(text: str) -> float | None:
    """A number as the page prints it (dom.js num: 4 significant digits, '–' for none)."""
    return None if text == "–" else float(text)


def test_a_failed_job_shows_its_error(page, served):
    failing = _failing_job(served)
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{failing}")
    error = page.inner_text("#job-error")
    assert "non_finite" in error and "inf" in error
    assert page.is_disabled("#download-weights")


def test_compare_overlays_two_jobs_with_their_hyperparameters(page, served):
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, "#/jobs?tag=compare")
    wait_until(page, "() => document.querySelectorAll('#jobs-table tbody tr').length === 2")
    for job in ("adam", "sgd"):
        page.check(f"tr[data-job='{served.jobs[job]}'] input[type=checkbox]")
    page.click("#compare-selected")
    wait_ready(page, "compare")
    assert state(page, "charts.compare_val_loss.series") == {"blobs-adam": 12, "blobs-sgd": 12}
    assert state(page, "charts.compare_val_accuracy.series") == {"blobs-adam": 12, "blobs-sgd": 12}
    optimizer_row = page.locator("#compare-table tr", has_text="optimizer").inner_text()
    assert "adam lr=0.01" in optimizer_row and "sgd lr=0.05" in optimizer_row and "differs" in optimizer_row
    assert "differs" not in page.locator("#compare-table tr", has_text="batch size").inner_text()
    shoot(page, "compare")


def test_the_datasets_page_lists_shape_task_classes_and_size(page, served):
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, "#/datasets")
    row = page.locator(f"tr[data-dataset='{served.dataset['id']}']").inner_text()
    assert "blobs" in row and "classification" in row and "[4]" in row and "3: alpha, beta, gamma" in row
    assert f"{served.dataset['size_bytes'] / 1024:.1f} KB" in row
    shoot(page, "datasets")


def test_the_landscape_page(page, served):
    """A succeeded job without a landscape offers to compute one; then the line, the surface, the
    spectral density and the Hessian's verdict are drawn, each figure in words with the API's numbers
    (every eigenvalue with its bound), and the PNG plots draw the same."""
    sign_in(page, served.api_url, served.key)
    goto(page, served.api_url, f"#/jobs/{served.jobs['adam']}/landscape")
    page.click("#compute-landscape")
    page.wait_for_selector("#hessian-verdict", timeout=CEILING_S * 1000)
    auth = {"Authorization": f"Bearer {served.key}"}
    hessian = httpx.get(f"{served.api_url}/v1/jobs/{served.jobs['adam']}/landscape", headers=auth,
                        timeout=30).json()["result"]["hessian"]
    assert page.inner_text("#hessian-verdict") == hessian["verdict"]
    reason = page.inner_text("#hessian-reason")
    assert reason == hessian["reason"][0].upper() + hessian["reason"][1:] + "."
    for end in ("largest", "smallest"):
        shown, bounded = page.inner_text(f"#hessian-{end}"), hessian[end]
        value, rest = shown.split(" ± ", 1)
        assert _shown(value) == pytest.approx(bounded["value"], rel=1e-3)
        assert _shown(rest.split(" ", 1)[0]) == pytest.approx(bounded["bound"], rel=0.5, abs=1e-300)
        run = "converged" if bounded["converged"] else "did not converge"
        assert rest.endswith(f"({run}; {bounded['products']} Hessian-vector products)"), shown
    density = hessian["density"]
    assert page.inner_text("#hessian-negative-mass").startswith(f"{100 * density['negative_mass']:.1f} % of the spectrum")
    assert page.inner_text("#hessian-products") == str(hessian["hessian_vector_products"])
    assert page.inner_text("#hessian-method") == "Lanczos (scipy's eigsh) on Hessian-vector products"
    text = page.inner_text("#hessian")
    assert '"' not in text and "_" not in text                    # no raw quoted strings or field names
    assert state(page, "charts.landscape_density.points") == len(density["eigenvalues"])
    floor = max(density["density"]) * 1e-6                # a log axis over six decades below the peak
    assert state(page, "charts.landscape_density.last") == {"density": pytest.approx(max(density["density"][-1], floor),
                                                                                      rel=1e-12)}
    assert state(page, "charts.landscape_line.points") >= 25
    assert state(page, "heatmaps.landscape_surface.cols") >= 21
    shoot(page, "landscape")
    for kind in ("landscape", "spectral_density"):
        png = httpx.get(f"{served.api_url}/v1/jobs/{served.jobs['adam']}/plots/{kind}.png", headers=auth, timeout=60)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")     # the same landscape, drawn


def test_chainrule_jobs_plot_writes_the_png(served, tmp_path):
    """The CLI's plot command against the same server (no browser needed)."""
    env = {"CHAINRULE_URL": served.api_url, "CHAINRULE_API_KEY": served.key}
    named = _cli(served, env, "jobs", "plot", served.jobs["adam"], "-o", str(tmp_path / "grad_norms.png"))
    assert "grad_norms" in named.stdout          # the kind comes from the file's name
    png = (tmp_path / "grad_norms.png").read_bytes()
    assert png.startswith(b"\x89PNG") and struct.unpack(">II", png[16:24]) == (800, 500)   # IHDR: width, height
    _cli(served, env, "jobs", "plot", served.jobs["adam"], "-k", "loss", "-o", str(tmp_path / "curve.png"),
         "--width", "640", "--height", "360")
    assert struct.unpack(">II", (tmp_path / "curve.png").read_bytes()[16:24]) == (640, 360)
    missing = _cli(served, env, "jobs", "plot", "00000000-0000-4000-8000-000000000000", check=False)
    assert missing.returncode == 1 and "404" in missing.stderr


def _cli(served, env, *args, check=True):
    proc = subprocess.run(chainrule_cmd() + list(args), env={**served.env, **env}, cwd=served.root,
                          capture_output=True, text=True, timeout=CEILING_S)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def _failing_job(served) -> str:
    """A linear regression with SGD at lr 100: the loss overflows to inf within an epoch (non_finite)."""
    rows = "\n".join(f"{i % 7},{(i * 3) % 11},{2 * (i % 7) - (i * 3) % 11}" for i in range(200))
    r = served.http.post("/v1/datasets", files={"file": ("line.csv", f"a,b,y\n{rows}\n".encode(), "text/csv")},
                         data={"name": "line", "task": "regression"})
    assert r.status_code == 201, r.text
    job = served.submit(r.json()["id"], **{**JOB, "epochs": 5, "loss": "mse"}, name="diverging",
                        model={"layers": [{"type": "linear", "out_features": 1}]}, optimizer={"type": "sgd", "lr": 100})
    assert served.wait_job(job["id"], watch=("serve",))["status"] == "failed"
    return job["id"]


def test_the_pages_event_stream_parser_reads_the_sse_format(page, served):
    """The stream is read with fetch (EventSource cannot send the key), so the page parses
    text/event-stream itself: events split across chunks, CRLF, comments, multi-line data, ids."""
    page.goto(f"{served.api_url}/ui/")
    wait_ready(page)
    events = page.evaluate("""async () => {
        const {eventParser} = await import('./js/sse.js');
        const parse = eventParser(), out = [];
        for (const chunk of [': ping\\r\\n\\r\\nid: status=running;epoch_row=3\\r\\nevent: ep', 'och\\r\\ndata: {"epoch"',
                             ': 3}\\r\\n\\r\\nretry: 2000\\ndata: line one\\ndata: line two\\n', '\\nevent: status\\ndata:{}\\n']) {
            out.push(...parse(chunk));
        }
        return out;
    }""")
    assert events == [
        {"event": "epoch", "data": '{"epoch": 3}', "id": "status=running;epoch_row=3", "retry": None},
        {"event": "message", "data": "line one\nline two", "id": "status=running;epoch_row=3", "retry": 2000},
    ]   # the last event has no blank line after it yet: held back until one arrives

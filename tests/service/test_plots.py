"""GET /v1/jobs/{id}/plots/{kind}.png: a PNG of the asked size that draws the job's own numbers;
404 for another key's job, 409 before there is anything to draw, 422 outside the size limits."""
from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.image import imread

from api import plots
from core.tables import Job, JobMetric

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRAD_NORMS = {"0": [0.5, 0.2, 0.05], "2": [1e-6, 1e-7, 1e-8]}      # layer 0 healthy, layer 2 vanishing


def epoch_entry(epoch: int) -> dict:
    """One epoch as the worker stores it: losses, accuracy, lr and per-layer health."""
    i = epoch - 1
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "train_accuracy": 0.5 + 0.1 * i,
            "val_accuracy": 0.45 + 0.1 * i, "lr": 0.01,
            "layers": {"0": {"type": "linear", "grad_norm": GRAD_NORMS["0"][i], "weight_norm": 3.0,
                             "update_ratio": 10.0 ** -(2 + i)},
                       "1": {"type": "relu", "dead_fraction": 0.1 * i},
                       "2": {"type": "linear", "grad_norm": GRAD_NORMS["2"][i], "weight_norm": 1.0,
                             "update_ratio": 0.0 if i == 0 else 1e-3}}}


@pytest.fixture
def trained(svc, iris) -> dict:
    """A job with three finished epochs, written as worker.callbacks writes them."""
    job = svc.submit(iris["id"]).json()
    with svc.session() as s:
        for epoch in (1, 2, 3):
            m = epoch_entry(epoch)
            s.add(JobMetric(job_id=job["id"], epoch=epoch, train_loss=m["train_loss"], val_loss=m["val_loss"], metrics=m))
        row = s.get(Job, job["id"])
        row.status, row.epoch, row.latest_metrics = "running", 3, epoch_entry(3)
        s.commit()
    return job


@pytest.mark.parametrize("kind", ["loss", "metric", "grad_norms", "update_ratios"])
def test_each_plot_is_a_png_of_the_asked_size(svc, trained, kind):
    r = svc.client.get(f"/v1/jobs/{trained['id']}/plots/{kind}.png?width=640&height=360", headers=svc.a)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content.startswith(PNG_MAGIC)
    assert imread(io.BytesIO(r.content), format="png").shape[:2] == (360, 640)


def test_default_size_and_the_limits(svc, trained):
    url = f"/v1/jobs/{trained['id']}/plots/loss.png"
    assert imread(io.BytesIO(svc.client.get(url, headers=svc.a).content), format="png").shape[:2] == (500, 800)
    big = svc.client.get(url + "?width=100000", headers=svc.a)
    assert big.status_code == 422 and "width 100000 px" in big.text and "2400" in big.text
    small = svc.client.get(url + "?height=10", headers=svc.a)
    assert small.status_code == 422 and "height 10 px" in small.text
    unknown = svc.client.get(f"/v1/jobs/{trained['id']}/plots/weights.png", headers=svc.a)
    assert unknown.status_code == 422 and "grad_norms" in unknown.text


def test_another_keys_job_is_404_and_so_is_a_missing_one(svc, trained):
    assert svc.client.get(f"/v1/jobs/{trained['id']}/plots/loss.png", headers=svc.b).status_code == 404
    assert svc.client.get("/v1/jobs/00000000-0000-4000-8000-000000000000/plots/loss.png", headers=svc.a).status_code == 404
    assert svc.client.get(f"/v1/jobs/{trained['id']}/plots/loss.png").status_code == 401


@pytest.mark.parametrize("kind", ["loss", "metric", "grad_norms", "update_ratios", "landscape"])
def test_409_before_there_is_anything_to_draw(svc, iris, kind):
    queued = svc.submit(iris["id"]).json()
    r = svc.client.get(f"/v1/jobs/{queued['id']}/plots/{kind}.png", headers=svc.a)
    assert r.status_code == 409 and "queued" in r.json()["detail"], r.text


def test_landscape_is_409_until_one_is_computed(svc, trained):
    r = svc.client.get(f"/v1/jobs/{trained['id']}/plots/landscape.png", headers=svc.a)
    assert r.status_code == 409 and "POST /v1/jobs/{id}/landscape" in r.json()["detail"]


def metrics_of(svc, job) -> list[dict]:
    return svc.client.get(f"/v1/jobs/{job['id']}/metrics", headers=svc.a).json()["epochs"]


def test_the_loss_plot_draws_the_jobs_losses(svc, trained):
    epochs = metrics_of(svc, trained)
    ax = plots.loss_figure(epochs).axes[0]
    drawn = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert np.allclose(drawn["train_loss"], [1.0, 0.5, 1 / 3]) and np.allclose(drawn["val_loss"], [1.2, 0.6, 0.4])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train_loss", "val_loss"]


def test_the_heatmap_has_one_row_per_layer_with_parameters_on_a_log_scale(svc, trained):
    fig = plots.grad_norm_figure(metrics_of(svc, trained))
    image = fig.axes[0].get_images()[0]
    assert isinstance(image.norm, LogNorm)
    assert np.allclose(image.get_array(), [GRAD_NORMS["0"], GRAD_NORMS["2"]])   # rows: layers; columns: epochs
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0 linear", "2 linear"]
    assert image.norm.vmin == pytest.approx(1e-8) and image.norm.vmax == pytest.approx(0.5)


def test_update_ratios_leave_out_zero_and_show_the_band(svc, trained):
    ax = plots.update_ratio_figure(metrics_of(svc, trained)).axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert np.allclose(lines["0 linear"], [1e-2, 1e-3, 1e-4])
    assert np.isnan(lines["2 linear"][0]) and np.allclose(lines["2 linear"][1:], [1e-3, 1e-3])   # 0: no log point
    assert ax.get_yscale() == "log"
    assert any(line.get_label() == "1e-3" and np.allclose(line.get_ydata(), 1e-3) for line in ax.get_lines())


def test_regression_metrics_put_r2_on_its_own_axis():
    epochs = [{"epoch": e, "train_loss": 1.0, "val_mae": 0.5 / e, "train_mae": 0.4 / e, "val_r2": 1 - 0.1 / e}
              for e in (1, 2)]
    fig = plots.metric_figure(epochs, "regression")
    left, right = fig.axes
    assert left.get_ylabel() == "MAE" and right.get_ylabel() == "R²"
    assert np.allclose([line for line in right.get_lines() if line.get_label() == "val_r2"][0].get_ydata(), [0.9, 0.95])
    with pytest.raises(plots.NothingToDraw):
        plots.metric_figure([{"epoch": 1, "train_loss": 1.0}], "regression")


def test_the_landscape_figure_draws_issue_6s_result():
    """GET /v1/jobs/{id}/landscape's shape: losses[i][j] at (xs[j], ys[i]); the origin is the final weights."""
    xs = np.linspace(-1, 1, 5)
    surface = np.add.outer(-xs ** 2, xs ** 2) + 2   # a saddle: x² - y² + 2, rows along y
    landscape = {"line": {"alphas": [-0.5, 0.0, 0.5, 1.0, 1.5], "losses": [3.0, 2.0, 1.0, 0.5, 0.8]},
                 "surface": {"xs": xs.tolist(), "ys": xs.tolist(), "losses": surface.tolist()},
                 "hessian": {"verdict": "saddle", "max_eigenvalue": 2.0, "min_eigenvalue": -2.0, "trace": 0.0}}
    fig = plots.landscape_figure(landscape)
    line_ax, surface_ax = fig.axes[:2]
    marked = {line.get_label(): (line.get_xdata()[0], line.get_ydata()[0]) for line in line_ax.get_lines()[1:]}
    assert marked == {"initial (α=0)": (0.0, 2.0), "final (α=1)": (1.0, 0.5)}
    star = [line for line in surface_ax.get_lines() if line.get_label() == "final weights"][0]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (0, 0)
    assert "saddle" in fig._suptitle.get_text() and "λmin = -2" in fig._suptitle.get_text()
    png = plots.render(fig, 900, 400)
    assert imread(io.BytesIO(png), format="png").shape[:2] == (400, 900)
    with pytest.raises(plots.NothingToDraw):
        plots.landscape_figure(None)


def test_the_spectral_density_figure_shades_the_mass_below_zero_and_the_title_carries_the_bounds():
    x = np.linspace(-1, 3, 41)
    density = {"eigenvalues": x.tolist(), "density": np.exp(-x ** 2).tolist(), "negative_mass": 0.125,
               "vectors": 3, "steps": 40}
    hessian = {"verdict": "inconclusive", "largest": {"value": 0.214, "bound": 1e-9, "converged": True, "products": 22},
               "smallest": {"value": -3.4e-4, "bound": 7e-4, "converged": False, "products": 100},
               "trace": 1.0, "density": density}
    fig = plots.spectral_density_figure({"hessian": hessian})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "eigenvalue" and ax.get_yscale() == "log"
    assert np.allclose(ax.get_lines()[0].get_xdata(), x)
    assert "below zero: 12.5 % of the eigenvalues" in [t.get_text() for t in ax.get_legend().get_texts()]
    title = plots.landscape_figure({"surface": {"xs": [-1, 0, 1], "ys": [-1, 0, 1], "losses": [[1, 2, 1]] * 3},
                                    "hessian": hessian})._suptitle.get_text()
    assert title == "Hessian: inconclusive, λmax = 0.214 ± 1e-09, λmin = -0.00034 ± 0.0007 (not converged), trace = 1"
    with pytest.raises(plots.NothingToDraw):
        plots.spectral_density_figure({"hessian": {"verdict": "minimum", "density": None}})

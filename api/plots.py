"""A job's pictures as PNG, for notebooks, the CLI and the README: matplotlib's object API on Agg.

No pyplot: its global figure registry is not thread-safe and routes run in a threadpool. Each
request builds its own Figure; `render` holds a lock so one drawing runs at a time (bounded CPU
and memory whatever the number of callers). Every figure says what it shows without colour alone:
line styles and markers differ per series, the legend names them, axes are labelled.

Inputs are what the API already returns: `epochs` is GET /v1/jobs/{id}/metrics' list, `landscape`
GET /v1/jobs/{id}/landscape's result ({line: {alphas, losses}, surface: {xs, ys, losses}, hessian}).
"""
from __future__ import annotations

import io
import math
import threading
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

KINDS = ("loss", "metric", "grad_norms", "update_ratios", "landscape", "spectral_density")
DPI = 100
UPDATE_RATIO_TARGET = 1e-3          # the usual update-to-weight ratio; a decade either side is the band
LOG_SPAN = 100.0                    # a positive series spanning more than this gets a log axis
STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DRAWING = threading.Lock()


class NothingToDraw(Exception):
    """The job has no data for this plot yet (the route answers 409 with this message)."""


def column(epochs: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    """One metric per epoch as floats; absent or null (a non-finite value) is NaN."""
    return np.array([np.nan if e.get(name) is None else float(e[name]) for e in epochs], dtype=float)


def layer_table(epochs: Sequence[dict[str, Any]], field: str) -> tuple[list[str], np.ndarray]:
    """Per-layer `field` over epochs: labels ("key type") of the layers that report it, in layer
    order, and values (layers, epochs) with NaN where an epoch lacks it."""
    keys: dict[str, str] = {}
    for e in epochs:
        for key, entry in (e.get("layers") or {}).items():
            if field in entry and key not in keys:
                keys[key] = entry.get("type", "")
    values = np.full((len(keys), len(epochs)), np.nan)
    for j, e in enumerate(epochs):
        layers = e.get("layers") or {}
        for i, key in enumerate(keys):
            v = layers.get(key, {}).get(field)
            values[i, j] = np.nan if v is None else float(v)
    return [f"{k} {t}".strip() for k, t in keys.items()], values


def _epoch_axis(epochs: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([int(e["epoch"]) for e in epochs])


def _epoch_ticks(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_if_wide(ax, *series: np.ndarray) -> None:
    values = np.concatenate([s[np.isfinite(s)] for s in series]) if series else np.array([])
    if values.size and values.min() > 0 and values.max() / values.min() > LOG_SPAN:
        ax.set_yscale("log")


def _findings(ax, epochs: Sequence[dict[str, Any]]) -> None:
    """Each finding (issue 6: an epoch entry's `findings`) as a dotted vertical line at its epoch."""
    marked = set()
    for e in epochs:
        for finding in e.get("findings") or []:
            epoch = finding.get("epoch", e["epoch"])
            if (epoch, finding.get("code")) in marked:
                continue
            marked.add((epoch, finding.get("code")))
            ax.axvline(epoch, color="0.35", linestyle=":", linewidth=1)
            ax.annotate(str(finding.get("code", "finding")), (epoch, 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color="0.25")


def _lines(ax, x: np.ndarray, named: list[tuple[str, np.ndarray]]) -> None:
    for i, (label, y) in enumerate(named):
        ax.plot(x, y, linestyle=STYLES[i % len(STYLES)], marker=MARKERS[i % len(MARKERS)],
                markevery=max(1, len(x) // 12), markersize=4, label=label)


def loss_figure(epochs: Sequence[dict[str, Any]]) -> Figure:
    if not epochs:
        raise NothingToDraw("no epoch has finished yet: the loss curve starts after the first one")
    x = _epoch_axis(epochs)
    named = [(n, column(epochs, n)) for n in ("train_loss", "val_loss") if any(n in e for e in epochs)]
    fig = Figure(layout="constrained")
    ax = fig.add_subplot()
    _lines(ax, x, named)
    _log_if_wide(ax, *(y for _, y in named))
    _findings(ax, epochs)
    _epoch_ticks(ax)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


METRICS = {"classification": (("train_accuracy", "val_accuracy"), ()),
           "regression": (("train_mae", "val_mae"), ("train_r2", "val_r2"))}


def metric_figure(epochs: Sequence[dict[str, Any]], task: str | None) -> Figure:
    """Accuracy (classification), or MAE on the left and R² on the right axis (regression)."""
    left, right = METRICS.get(task or "", METRICS["classification"])
    present = [n for n in left + right if any(e.get(n) is not None for e in epochs)]
    if not present:
        raise NothingToDraw("no epoch has finished yet, or the job reports no accuracy / MAE / R²")
    x = _epoch_axis(epochs)
    fig = Figure(layout="constrained")
    ax = fig.add_subplot()
    _lines(ax, x, [(n, column(epochs, n)) for n in left if n in present])
    _epoch_ticks(ax)
    ax.set(xlabel="epoch", ylabel="accuracy" if task != "regression" else "MAE",
           title="Accuracy" if task != "regression" else "MAE and R²")
    handles, labels = ax.get_legend_handles_labels()
    if any(n in present for n in right):
        twin = ax.twinx()
        for i, n in enumerate(right):
            if n in present:   # styles and colours after the left axis's two, so no two series look alike
                twin.plot(x, column(epochs, n), linestyle=STYLES[2 + i], marker=MARKERS[2 + i], color=f"C{2 + i}",
                          markevery=max(1, len(x) // 12), markersize=4, label=n)
        twin.set_ylabel("R²")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels)
    ax.grid(alpha=0.3)
    return fig


def grad_norm_figure(epochs: Sequence[dict[str, Any]]) -> Figure:
    """Layers (rows, input at the top) x epochs on a log colour scale: a gradient vanishing toward
    the input is a dark band at the top, an exploding one a bright column."""
    labels, values = layer_table(epochs, "grad_norm")
    positive = values[np.isfinite(values) & (values > 0)]
    if not labels or positive.size == 0:
        raise NothingToDraw("no epoch has finished yet, or no layer has parameters to take gradients of")
    x = _epoch_axis(epochs)
    fig = Figure(layout="constrained")
    ax = fig.add_subplot()
    lo, hi = float(positive.min()), float(positive.max())
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
    masked = np.ma.masked_where(~np.isfinite(values) | (values <= 0), values)
    # zero or non-finite: light grey, not a colour of the scale
    image = ax.imshow(masked, aspect="auto", interpolation="nearest", norm=norm,
                      cmap=colormaps["viridis"].with_extremes(bad="0.85"),
                      extent=(x[0] - 0.5, x[-1] + 0.5, len(labels) - 0.5, -0.5))
    ax.set_yticks(range(len(labels)), labels)
    _epoch_ticks(ax)
    ax.set(xlabel="epoch", ylabel="layer (input at the top)", title="Gradient norm per layer")
    fig.colorbar(image, ax=ax, label="gradient 2-norm (log scale)")
    return fig


def update_ratio_figure(epochs: Sequence[dict[str, Any]]) -> Figure:
    labels, values = layer_table(epochs, "update_ratio")
    if not labels or not np.isfinite(values).any():
        raise NothingToDraw("no epoch has finished yet, or no layer has parameters to update")
    x = _epoch_axis(epochs)
    fig = Figure(layout="constrained")
    ax = fig.add_subplot()
    ax.axhspan(UPDATE_RATIO_TARGET / 10, UPDATE_RATIO_TARGET * 10, color="0.9", label="1e-4 .. 1e-2")
    ax.axhline(UPDATE_RATIO_TARGET, color="0.4", linestyle=":", linewidth=1, label="1e-3")
    _lines(ax, x, [(label, np.where(values[i] > 0, values[i], np.nan)) for i, label in enumerate(labels)])
    ax.set_yscale("log")
    _epoch_ticks(ax)
    ax.set(xlabel="epoch", ylabel="||Δw|| / ||w||", title="Update-to-weight ratio per layer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def landscape_figure(landscape: dict[str, Any] | None) -> Figure:
    """The 1-D line from the initial to the final weights beside the 2-D surface around the final
    weights (marked), the Hessian's verdict in the title."""
    line, surface = (landscape or {}).get("line"), (landscape or {}).get("surface")
    if not line and not surface:
        raise NothingToDraw("no loss landscape has been computed for this job: POST /v1/jobs/{id}/landscape")
    fig = Figure(layout="constrained")
    axes = fig.subplots(1, int(bool(line)) + int(bool(surface)), squeeze=False)[0]
    if line:
        ax = axes[0]
        alphas, losses = np.asarray(line["alphas"], float), np.asarray(line["losses"], float)
        ax.plot(alphas, losses, marker="o", markersize=3)
        for alpha, label, marker in ((0.0, "initial", "s"), (1.0, "final", "*")):
            ax.plot([alpha], [np.interp(alpha, alphas, losses)], marker=marker, markersize=9, linestyle="",
                    label=f"{label} (α={alpha:g})")
        _log_if_wide(ax, losses)
        ax.set(xlabel="α  (weights = (1-α)·initial + α·final)", ylabel="loss", title="Line: initial → final")
        ax.legend()
        ax.grid(alpha=0.3)
    if surface:
        _surface(fig, axes[-1], surface)
    fig.suptitle(_verdict((landscape or {}).get("hessian")))
    return fig


def _surface(fig: Figure, ax, surface: dict[str, Any]) -> None:
    """losses[i][j] is the loss at (xs[j], ys[i]); the final weights are the origin."""
    xs, ys = np.asarray(surface["xs"], float), np.asarray(surface["ys"], float)
    losses = np.asarray(surface["losses"], float)
    finite = losses[np.isfinite(losses)]
    wide = finite.size and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN
    norm = LogNorm(finite.min(), finite.max()) if wide else Normalize(finite.min(), finite.max())
    filled = ax.contourf(xs, ys, losses, levels=16, norm=norm, cmap="viridis")
    lines = ax.contour(xs, ys, losses, levels=filled.levels[::2], colors="white", linewidths=0.6)
    ax.clabel(lines, fontsize=7, fmt="%.3g")
    ax.plot([0], [0], marker="*", color="red", markeredgecolor="black", markersize=14, linestyle="",
            label="final weights")
    ax.set(xlabel="direction 1", ylabel="direction 2", title="Surface around the final weights")
    ax.legend(loc="upper right")
    fig.colorbar(filled, ax=ax, label="loss")


def _verdict(hessian: dict[str, Any] | None) -> str:
    if not hessian:
        return "Loss landscape"
    parts = [f"Hessian: {hessian.get('verdict', '?')}"]
    for end, name, label in (("largest", "max_eigenvalue", "λmax"), ("smallest", "min_eigenvalue", "λmin")):
        bounded = hessian.get(end)
        if bounded:
            parts.append(f"{label} = {bounded['value']:.3g} ± {bounded['bound']:.1g}"
                         + ("" if bounded["converged"] else " (not converged)"))
        elif isinstance(hessian.get(name), (int, float)) and math.isfinite(hessian[name]):
            parts.append(f"{label} = {hessian[name]:.4g}")
    if isinstance(hessian.get("trace"), (int, float)) and math.isfinite(hessian["trace"]):
        parts.append(f"trace = {hessian['trace']:.4g}")
    return ", ".join(parts)


def spectral_density_figure(landscape: dict[str, Any] | None) -> Figure:
    """The Hessian's spectral density (stochastic Lanczos quadrature), the mass below zero shaded."""
    density = ((landscape or {}).get("hessian") or {}).get("density")
    if not density:
        raise NothingToDraw("no spectral density has been computed for this job: POST /v1/jobs/{id}/landscape "
                            "with density_vectors >= 1")
    x, y = np.asarray(density["eigenvalues"], float), np.asarray(density["density"], float)
    floor = np.nanmax(y) * 1e-6                     # a log axis, as PyHessian draws it: the tails show
    y = np.maximum(y, floor)
    fig = Figure(layout="constrained")
    ax = fig.add_subplot()
    ax.plot(x, y, color="#0072B2", label="density")
    ax.fill_between(x, floor, y, where=x < 0, color="#D55E00", alpha=0.4, hatch="//",
                    label=f"below zero: {100 * density['negative_mass']:.1f} % of the eigenvalues")
    ax.set_yscale("log")
    ax.axvline(0.0, color="0.3", linestyle=":", linewidth=1)
    ax.set(xlabel="eigenvalue", ylabel="density (log scale)",
           title=f"Spectral density of the Hessian ({density['vectors']} vectors x {density['steps']} Lanczos steps)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def render(fig: Figure, width: int, height: int) -> bytes:
    """The figure as PNG bytes of exactly width x height pixels."""
    with _DRAWING:
        fig.set_size_inches(width / DPI, height / DPI)
        FigureCanvasAgg(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()

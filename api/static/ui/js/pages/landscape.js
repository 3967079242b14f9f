// A job's loss landscape (GET /v1/jobs/{id}/landscape: its status, then its `result`):
//   line: {alphas, losses}      the loss from the initial (α=0) to the final (α=1) weights
//   surface: {xs, ys, losses}   losses[i][j] at (xs[j], ys[i]) around the final weights (the origin)
//   hessian: {verdict, reason, largest: {value, bound, converged, products}, smallest, density, trace, ...}
// A succeeded job without one gets a button that asks for it (POST), then the page polls its status.
import {ApiError, request} from "../api.js";
import {LineChart, positiveOnly} from "../charts.js";
import {fill, h, notice, num, percent, statusBadge} from "../dom.js";
import {Heatmap} from "../heatmap.js";
import {sleep} from "../sse.js";

export const NAME = "landscape";
const POLL_MS = 3000;
const DENSITY_FLOOR = 1e-6;     // of the density's peak: the log axis spans six decades
const PENDING = new Set(["queued", "running", "pending", "computing"]);

export async function render(main, page) {
  const id = encodeURIComponent(page.id);
  const job = await request(`jobs/${id}`, {signal: page.signal});
  const body = h("div");
  fill(main, h("h1", {}, "Loss landscape: ", h("a", {href: `#/jobs/${id}`}, job.name || job.id), " ", statusBadge(job.status)), body);
  const charts = [];
  page.onLeave(() => charts.forEach((c) => c.destroy()));
  for (let first = true; !page.signal.aborted; first = false) {
    // the job says whether it has one (null: none asked for), so none is fetched that is not there
    const current = first ? job : await request(`jobs/${id}`, {signal: page.signal});
    const landscape = current.landscape ? await fetchLandscape(id, page.signal) : null;
    const result = landscape && landscape.result;
    if (result && (result.line || result.surface)) {
      charts.push(...draw(body, result));
      return page.ready();
    }
    const status = landscape ? landscape.status : null;
    if (!PENDING.has(status)) {
      fill(body, status ? notice(`The landscape ${status}${landscape.error ? `: ${landscape.error.message || landscape.error}` : ""}.`, "error") : null,
           askButton(id, job, page, body));
      return page.ready();
    }
    fill(body, notice(`Computing the landscape (${status})… this page updates by itself.`));
    if (first) page.ready();
    await sleep(POLL_MS, page.signal);
  }
}

// null when none has been asked for (404 / 409), else the body as sent
async function fetchLandscape(id, signal) {
  try {
    return await request(`jobs/${id}/landscape`, {signal});
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 409)) return null;
    throw error;
  }
}

function askButton(id, job, page, body) {
  if (job.status !== "succeeded") return notice(`A landscape needs the final weights: this job is ${job.status}.`);
  return h("button", {type: "button", id: "compute-landscape", onclick: async () => {
    try {
      await request(`jobs/${id}/landscape`, {method: "POST", body: {}});
      window.dispatchEvent(new HashChangeEvent("hashchange"));     // render again: now it polls
    } catch (error) {
      body.append(notice(`${error.status || ""} ${error.message}`, "error"));
    }
  }}, "Compute the loss landscape");
}

function draw(body, landscape) {
  const grid = h("div", {class: "charts"}), charts = [];
  fill(body, hessianPanel(landscape.hessian), grid);
  if (landscape.line) {
    const chart = new LineChart(grid, {name: "landscape_line", title: "Line from the initial to the final weights",
                                       xLabel: "α", yLabel: "loss", series: [{label: "loss"}], integerX: false});
    chart.setData(landscape.line.alphas, [landscape.line.losses]);
    chart.setMarkers([{x: 0, label: "initial", severity: "info"}, {x: 1, label: "final", severity: "info"}]);
    charts.push(chart);
  }
  if (landscape.surface) charts.push(surfaceMap(grid, landscape.surface));
  const density = landscape.hessian && landscape.hessian.density;
  if (density) {
    const chart = new LineChart(grid, {name: "landscape_density", title: "Spectral density of the Hessian",
                                       description: `(${percent(density.negative_mass)} of the eigenvalues below zero)`,
                                       xLabel: "eigenvalue", yLabel: "density (log scale)", series: [{label: "density"}],
                                       integerX: false, log: true});     // as PyHessian draws it: the tails show
    const floor = Math.max(...density.density) * DENSITY_FLOOR;             // the PNG's floor too (api/plots.py)
    chart.setData(density.eigenvalues, [positiveOnly(density.density.map((v) => Math.max(v, floor)))]);
    chart.setMarkers([{x: 0, label: "0", severity: "info"}]);
    charts.push(chart);
  }
  return charts;
}

// the surface as a heat map, direction 2 increasing upward, the final weights (0, 0) starred
function surfaceMap(grid, surface) {
  const ys = surface.ys.slice().reverse(), values = surface.losses.slice().reverse();
  const flat = values.flat().filter((v) => typeof v === "number" && Number.isFinite(v));
  const log = flat.length > 0 && Math.min(...flat) > 0 && Math.max(...flat) / Math.min(...flat) > 100;
  const map = new Heatmap(grid, {name: "landscape_surface", title: "Surface around the final weights (★)",
                                 xLabel: "direction 1", yLabel: "direction 2 = ", valueLabel: "loss", log, description: "",
                                 marker: (ctx, plot, self) => star(ctx, plot, self)});
  map.setData(surface.xs, ys.map((y) => num(y)), values);
  map.origin = {col: nearest(surface.xs, 0), row: nearest(ys, 0)};
  map.draw();
  return map;
}

function nearest(values, target) {
  let best = 0;
  values.forEach((v, i) => { if (Math.abs(v - target) < Math.abs(values[best] - target)) best = i; });
  return best;
}

function star(ctx, plot, map) {
  if (!map.origin) return;
  const cw = plot.width / map.xs.length, rh = plot.height / map.rows.length;
  ctx.font = "20px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.lineWidth = 3; ctx.strokeStyle = "#fff"; ctx.fillStyle = "#000";
  const x = plot.left + (map.origin.col + 0.5) * cw, y = plot.top + (map.origin.row + 0.5) * rh;
  ctx.strokeText("★", x, y);
  ctx.fillText("★", x, y);
}

// the Hessian's report in words: each eigenvalue with its bound, the verdict with its reason
function hessianPanel(hessian) {
  if (!hessian) return null;
  const verdict = hessian.verdict || "?";
  const facts = [
    ["Largest eigenvalue", "hessian-largest", eigenvalue(hessian.largest, hessian.max_eigenvalue)],
    ["Smallest eigenvalue", "hessian-smallest", eigenvalue(hessian.smallest, hessian.min_eigenvalue)],
    ["Eigensolver", "hessian-method", hessian.method === "dense" ? "the whole Hessian, read column by column (few parameters)"
      : hessian.method === "lanczos" ? "Lanczos (scipy's eigsh) on Hessian-vector products" : "power iteration (an older result)"],
    ["Counted as flat", "hessian-flat", hessian.flat === undefined || hessian.flat === null ? "–"
      : `|eigenvalue| ≤ ${num(hessian.flat)} (tolerance ${num(hessian.tolerance)} × the largest |eigenvalue|)`],
    ["Eigenvalues below zero", "hessian-negative-mass", hessian.density
      ? `${percent(hessian.density.negative_mass)} of the spectrum (density from ${hessian.density.vectors} random vectors, ` +
        `${hessian.density.steps} Lanczos steps each)` : "not computed"],
    ["Trace", "hessian-trace", hessian.trace_method === "exact"
      ? `${num(hessian.trace)} (exact, summed over all ${hessian.trace_samples} parameters)`
      : `${num(hessian.trace)} ± ${num(hessian.trace_stderr)} (Hutchinson's estimate from ${hessian.trace_samples} random vectors)`],
    ["Gradient norm", "hessian-gradient-norm", num(hessian.gradient_norm)],
    ["Parameters", "hessian-parameters", String(hessian.parameters)],
    ["Hessian-vector products", "hessian-products", String(hessian.hessian_vector_products)],
  ];
  return h("section", {class: "panel", id: "hessian"},
    h("h2", {}, "Curvature at the final weights: ", h("strong", {id: "hessian-verdict"}, verdict)),
    h("p", {class: "hint", id: "hessian-reason"}, hessian.reason
      ? sentence(hessian.reason) : "Computed before eigenvalues carried bounds: compute the landscape again for them."),
    h("dl", {class: "facts"}, facts.map(([label, id, text]) => h("div", {}, h("dt", {}, label), h("dd", {id}, text)))));
}

// "0.1233 ± 5e-11 (converged after 22 Hessian-vector products)"
function eigenvalue(end, value) {
  if (!end) return num(value);
  const state = end.converged ? "converged" : "did not converge";
  return `${num(end.value)} ± ${num(end.bound, 1)} (${state}; ${end.products} Hessian-vector products)`;
}

function sentence(text) {
  return text.charAt(0).toUpperCase() + text.slice(1) + (text.endsWith(".") ? "" : ".");
}

// A job's loss landscape (GET /v1/jobs/{id}/landscape: its status, then its `result`):
//   line: {alphas, losses}      the loss from the initial (α=0) to the final (α=1) weights
//   surface: {xs, ys, losses}   losses[i][j] at (xs[j], ys[i]) around the final weights (the origin)
//   hessian: {max_eigenvalue, min_eigenvalue, trace, verdict, iterations, residual, ...}
// A succeeded job without one gets a button that asks for it (POST), then the page polls its status.
import {ApiError, request} from "../api.js";
import {LineChart} from "../charts.js";
import {fill, h, notice, num, statusBadge} from "../dom.js";
import {Heatmap} from "../heatmap.js";
import {sleep} from "../sse.js";

export const NAME = "landscape";
const POLL_MS = 3000;
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

function hessianPanel(hessian) {
  if (!hessian) return null;
  const verdict = hessian.verdict || "?";
  const items = Object.entries(hessian).filter(([k]) => k !== "verdict");
  return h("section", {class: "panel", id: "hessian"},
    h("h2", {}, "Curvature at the final weights: ", h("strong", {id: "hessian-verdict"}, verdict)),
    h("p", {class: "hint"}, verdict === "saddle"
      ? "A clearly negative eigenvalue: the loss still decreases along some direction (a saddle point)."
      : "No clearly negative eigenvalue: a minimum, as far as power iteration can tell."),
    h("dl", {class: "facts"}, items.map(([k, v]) => h("div", {}, h("dt", {}, k.replaceAll("_", " ")),
                                                      h("dd", {}, typeof v === "number" ? num(v) : JSON.stringify(v))))));
}

// Line charts on uPlot (vendor/uplot, loaded as a classic script: window.uPlot). Every series has
// its own dash pattern as well as its colour, the legend names it and shows its value under the
// cursor, so a chart reads without colour. Each chart reports what it holds to window.__chainrule
// (points per series, marked epochs): the browser tests assert on that, not on pixels.
import {h, num} from "./dom.js";

// Okabe & Ito's palette: distinguishable with the common colour-vision deficiencies
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999933"];
export const DASHES = [[], [7, 4], [2, 3], [9, 3, 2, 3], [4, 4], [1, 5]];
const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];   // epochs, layers
const SEVERITY_MARK = {error: "✕", warning: "▲", info: "●"};
const HEIGHT = 260;

export const debug = window.__chainrule = window.__chainrule || {charts: {}, heatmaps: {}, page: null, readyAt: null};

export function styleOf(i) {
  return {stroke: PALETTE[i % PALETTE.length], dash: DASHES[i % DASHES.length]};
}

// Vertical dashed lines at findings' epochs, labelled with a severity mark and the rule's code.
function markersPlugin(chart) {
  return {hooks: {draw: [(u) => {
    const ctx = u.ctx, {top, height} = u.bbox;
    ctx.save();
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = "#444";
    ctx.fillStyle = "#222";
    ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    for (const m of chart.markers) {
      const x = u.valToPos(m.x, "x", true);
      if (!Number.isFinite(x) || x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
      ctx.fillText(`${SEVERITY_MARK[m.severity] || "●"} ${m.label}`, x + 3 * devicePixelRatio, top + 12 * devicePixelRatio);
    }
    ctx.restore();
  }]}};
}

// A shaded horizontal band [lo, hi] on the y scale, drawn under the series (update ratios: 1e-3).
function bandPlugin(band) {
  return {hooks: {drawClear: [(u) => {
    const y0 = u.valToPos(band.hi, "y", true), y1 = u.valToPos(band.lo, "y", true);
    const top = Math.max(u.bbox.top, Math.min(y0, y1)), bottom = Math.min(u.bbox.top + u.bbox.height, Math.max(y0, y1));
    if (!(bottom > top)) return;
    u.ctx.save();
    u.ctx.fillStyle = "rgba(0, 0, 0, 0.07)";
    u.ctx.fillRect(u.bbox.left, top, u.bbox.width, bottom - top);
    const mid = u.valToPos(band.mid, "y", true);
    u.ctx.setLineDash([2, 4]); u.ctx.strokeStyle = "#555";
    u.ctx.beginPath(); u.ctx.moveTo(u.bbox.left, mid); u.ctx.lineTo(u.bbox.left + u.bbox.width, mid); u.ctx.stroke();
    u.ctx.restore();
  }]}};
}

// new LineChart(parent, {name, title, xLabel, yLabel, log, series: [{label, scale}], band, rightLabel, range})
// range: (u, min, max) => [lo, hi] for the y scale, when the data's own span would mislead
export class LineChart {
  constructor(parent, {name, title, xLabel = "epoch", yLabel = "", log = false, series, band = null,
                       rightLabel = null, description = "", integerX = true, range = null}) {
    this.name = name;
    this.markers = [];
    this.labels = series.map((s) => s.label);
    this.el = h("figure", {class: "chart", dataset: {chart: name}},
                h("figcaption", {}, title, description ? h("span", {class: "hint"}, ` ${description}`) : null));
    parent.append(this.el);
    const scales = {x: {time: false}, y: log ? {distr: 3, log: 10} : range ? {range} : {}};
    const ticks = (u, splits) => splits.map((v) => (v === null || v === undefined ? "" : num(v)));
    const axes = [{label: xLabel, stroke: "#333", ...(integerX ? {incrs: INTEGER_STEPS} : {})},
                  {label: yLabel, stroke: "#333", size: 64, values: ticks}];
    if (rightLabel) {
      scales.right = {};
      axes.push({scale: "right", side: 1, label: rightLabel, stroke: "#333", grid: {show: false}, size: 64, values: ticks});
    }
    this.plot = new window.uPlot({
      width: this.width(), height: HEIGHT, scales, axes,
      series: [{label: xLabel}, ...series.map((s, i) => ({
        label: s.label, scale: s.scale || "y", width: 2, spanGaps: false, ...styleOf(i), ...(s.style || {}),
        points: {show: (u, si, i0, i1) => i1 - i0 < 60},
        value: (u, v) => (v === null || v === undefined ? "–" : num(v)),
      }))],
      cursor: {drag: {x: true, y: false}},
      legend: {live: true},
      plugins: [markersPlugin(this), ...(band ? [bandPlugin(band)] : [])],
    }, [[], ...series.map(() => [])], this.el);
    this.resizer = new ResizeObserver(() => this.plot.setSize({width: this.width(), height: HEIGHT}));
    this.resizer.observe(this.el);
    this.report(0);
  }

  width() { return Math.max(240, Math.floor(this.el.clientWidth || this.el.parentElement.clientWidth || 600)); }

  // x: epochs; ys: one array per series, null where an epoch lacks the value
  setData(x, ys) {
    this.plot.setData([x, ...ys]);
    this.report(x.length, ys);
  }

  setMarkers(markers) {
    this.markers = markers;
    this.plot.redraw(false, false);
    this.report(this.plot.data[0].length, this.plot.data.slice(1));
  }

  report(n, ys = []) {
    const series = Object.fromEntries(this.labels.map((label, i) => [label, (ys[i] || []).filter((v) => v !== null && v !== undefined).length]));
    this.el.dataset.points = String(n);
    const y = this.plot.scales.y;
    const last = Object.fromEntries(this.labels.map((label, i) => [label, (ys[i] || []).filter((v) => v !== null && v !== undefined).at(-1) ?? null]));
    debug.charts[this.name] = {points: n, series, last, y: [y.min, y.max], markers: this.markers.map((m) => ({x: m.x, label: m.label}))};
  }

  destroy() {
    this.resizer.disconnect();
    this.plot.destroy();
    delete debug.charts[this.name];
  }
}

// A log axis cannot show 0 or negatives: those become gaps.
export function positiveOnly(values) {
  return values.map((v) => (typeof v === "number" && v > 0 ? v : null));
}

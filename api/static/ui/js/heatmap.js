// A heat map on a canvas: rows x columns of values on a log (or linear) colour scale, a colour bar
// with its numbers, and the value under the cursor in words. Viridis gets lighter monotonically, so
// the scale also reads in grey. Used for gradient norms (layers x epochs) and the loss surface.
import {debug} from "./charts.js";
import {h, num} from "./dom.js";

// viridis at 9 evenly spaced stops, dark (low) to light (high)
const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                 [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
const MISSING = "#d9d9d9";   // zero or non-finite: grey, outside the scale
const BAR = 14;

export function colour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return `rgb(${a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",")})`;
}

// new Heatmap(parent, {name, title, xLabel, yLabel, valueLabel, log}); setData(xs, rows, values)
// values[r][c] is the value of row r at column c (null: missing); xs labels the columns.
export class Heatmap {
  constructor(parent, {name, title, xLabel, yLabel = "", valueLabel, log = true, description = "", marker = null,
                       rowHeight = null, fixed = null}) {
    // rowHeight: px per row (default 16 to 40); fixed: [lo, hi] of the colour scale (default: the data's)
    Object.assign(this, {name, xLabel, yLabel, valueLabel, log, marker, rowHeight, fixed});
    this.canvas = h("canvas", {role: "img", "aria-label": title});
    this.tip = h("div", {class: "tip", hidden: true});
    this.readout = h("p", {class: "readout", "aria-live": "polite"}, "Hover a cell for its value.");
    this.el = h("figure", {class: "chart heatmap", dataset: {heatmap: name}},
                h("figcaption", {}, title, h("span", {class: "hint"}, ` ${description} colour: ${valueLabel}, ${log ? "log" : "linear"} scale`)),
                h("div", {class: "canvas-box"}, this.canvas, this.tip), this.readout);
    parent.append(this.el);
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    this.resizer = new ResizeObserver(() => this.draw());
    this.resizer.observe(this.el);
    this.setData([], [], []);
  }

  setData(xs, rows, values) {
    Object.assign(this, {xs, rows, values});
    let lo = Infinity, hi = -Infinity;
    for (const row of values) for (const v of row) {
      if (typeof v === "number" && Number.isFinite(v) && (!this.log || v > 0)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    [this.lo, this.hi] = this.fixed ? this.fixed : lo <= hi ? [lo, hi] : [1, 1];
    this.el.dataset.rows = String(rows.length);
    this.el.dataset.cols = String(xs.length);
    debug.heatmaps[this.name] = {rows: rows.slice(), cols: xs.length, lo: this.lo, hi: this.hi};
    this.draw();
  }

  scale(v) {
    if (typeof v !== "number" || !Number.isFinite(v) || (this.log && v <= 0)) return null;
    if (this.hi === this.lo) return 0.5;
    return this.log ? Math.log(v / this.lo) / Math.log(this.hi / this.lo) : (v - this.lo) / (this.hi - this.lo);
  }

  layout(width) {
    const ctx = this.canvas.getContext("2d");
    ctx.font = "12px system-ui, sans-serif";
    const labelWidth = Math.min(140, Math.max(30, ...this.rows.map((r) => ctx.measureText(r).width + 8)));
    const rowHeight = this.rowHeight ?? Math.max(16, Math.min(40, 240 / Math.max(this.rows.length, 1)));
    const plot = {left: labelWidth + 18, top: 8, width: Math.max(60, width - labelWidth - 18 - 90),
                  height: rowHeight * Math.max(this.rows.length, 1)};
    return {plot, height: plot.top + plot.height + 42};
  }

  draw() {
    const width = Math.max(260, this.el.clientWidth || 600), {plot, height} = this.layout(width);
    const ratio = window.devicePixelRatio || 1;
    Object.assign(this.canvas, {width: width * ratio, height: height * ratio});
    Object.assign(this.canvas.style, {width: `${width}px`, height: `${height}px`});
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    this.plotBox = plot;
    if (debug.heatmaps[this.name]) debug.heatmaps[this.name].box = plot;   // where each cell is, for the tests to hover
    const n = this.xs.length, cw = plot.width / Math.max(n, 1), rh = plot.height / Math.max(this.rows.length, 1);
    // more columns than pixels (a long job): one pixel column shows the column at its centre, as an
    // image scaled down does; hovering still reads each epoch's own value
    const drawn = Math.min(n, Math.floor(plot.width)), dw = plot.width / Math.max(drawn, 1);
    this.values.forEach((row, r) => {
      for (let j = 0; j < drawn; j++) {
        const t = this.scale(row[Math.floor(((j + 0.5) * n) / drawn)]);
        ctx.fillStyle = t === null ? MISSING : colour(t);
        ctx.fillRect(plot.left + j * dw, plot.top + r * rh, Math.ceil(dw), Math.ceil(rh));
      }
    });
    this.drawAxes(ctx, plot, cw, rh);
    this.drawBar(ctx, plot);
    if (this.marker) this.marker(ctx, plot, this);
  }

  drawAxes(ctx, plot, cw, rh) {
    ctx.fillStyle = "#222";
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    const every = Math.ceil(12 / rh);          // rows lower than the font: label every k-th
    this.rows.forEach((label, r) => { if (r % every === 0) ctx.fillText(label, plot.left - 6, plot.top + (r + 0.5) * rh); });
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const step = Math.max(1, Math.ceil(this.xs.length / Math.max(2, Math.floor(plot.width / 50))));
    for (let c = 0; c < this.xs.length; c += step) {
      ctx.fillText(num(this.xs[c]), plot.left + (c + 0.5) * cw, plot.top + plot.height + 4);
    }
    ctx.fillText(this.xLabel, plot.left + plot.width / 2, plot.top + plot.height + 22);
  }

  drawBar(ctx, plot) {
    const x = plot.left + plot.width + 14, n = 64;
    for (let i = 0; i < n; i++) {
      ctx.fillStyle = colour(1 - i / (n - 1));
      ctx.fillRect(x, plot.top + (i * plot.height) / n, BAR, Math.ceil(plot.height / n));
    }
    ctx.fillStyle = "#222"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
    for (const [t, v] of [[0, this.hi], [0.5, this.log ? Math.sqrt(this.lo * this.hi) : (this.lo + this.hi) / 2], [1, this.lo]]) {
      ctx.fillText(num(v), x + BAR + 4, plot.top + t * plot.height);
    }
  }

  // the cell under the pointer, in words
  hover(event) {
    const box = this.plotBox, rect = this.canvas.getBoundingClientRect();
    const px = event.clientX - rect.left - box.left, py = event.clientY - rect.top - box.top;
    const c = Math.floor((px / box.width) * this.xs.length), r = Math.floor((py / box.height) * this.rows.length);
    if (px < 0 || py < 0 || c >= this.xs.length || r >= this.rows.length) { this.tip.hidden = true; return; }
    const v = this.values[r][c];
    const text = `${this.yLabel}${this.rows[r]} · ${this.xLabel} ${num(this.xs[c])}: ${this.valueLabel} ${v === null || v === undefined ? "–" : num(v)}`;
    this.tip.textContent = text;
    this.readout.textContent = text;
    Object.assign(this.tip.style, {left: `${event.clientX - rect.left + 12}px`, top: `${event.clientY - rect.top + 12}px`});
    this.tip.hidden = false;
  }

  destroy() {
    this.resizer.disconnect();
    delete debug.heatmaps[this.name];
  }
}

// A job's gradient health and diagnoses, drawn from its metrics' per-layer entries and (with the
// diagnostics release) its findings and init report:
//   grad_norm -> heat map, layers x epochs, log colour scale (vanishing: a dark band toward the input)
//   update_ratio -> one line per layer on a log axis against the usual 1e-3 (shaded: a decade either side)
//   dead_fraction (relu) / saturated_fraction (sigmoid, tanh) -> one line per layer, 0..1
//   init_report -> activation and gradient std per layer at step 0 (variance kept across depth?)
//   findings -> a list, and markers on the curves at their epochs
import {LineChart, positiveOnly} from "../charts.js";
import {fill, h, num, table} from "../dom.js";
import {Heatmap} from "../heatmap.js";
import {layerName, layerTable} from "../series.js";

export const FRACTIONS = ["dead_fraction", "saturated_fraction"];

export class Health {
  constructor(parent) {
    this.section = h("section", {class: "panel", id: "health"}, h("h2", {}, "Gradient health"));
    this.grid = h("div", {class: "charts"});
    this.section.append(this.grid);
    parent.append(this.section);
    this.heatmap = new Heatmap(this.grid, {
      name: "grad_norms", title: "Gradient norm per layer", xLabel: "epoch", yLabel: "layer ",
      valueLabel: "grad norm", description: "(input at the top; dark = small);"});
    this.ratios = null;          // made when the layers are known (one series per layer)
    this.fractions = null;
    this.layerKeys = "";
  }

  update(epochs) {
    const x = epochs.map((e) => e.epoch);
    const norms = layerTable(epochs, "grad_norm");
    this.heatmap.setData(x, norms.labels, norms.values);
    const ratios = layerTable(epochs, "update_ratio");
    const fractions = FRACTIONS.map((f) => [f, layerTable(epochs, f)]).filter(([, t]) => t.keys.length);
    const fractionLabels = fractions.flatMap(([f, t]) => t.labels.map((l) => `${l} ${f.replace("_fraction", "")}`));
    const shape = JSON.stringify([ratios.labels, fractionLabels]);
    if (shape !== this.layerKeys) this.rebuild(ratios.labels, fractionLabels);
    this.layerKeys = shape;
    this.ratios?.setData(x, ratios.values.map(positiveOnly));
    this.fractions?.setData(x, fractions.flatMap(([, t]) => t.values));
  }

  // a layer appeared (the first epoch, or a new kind of statistic): charts with one series per layer
  rebuild(ratioLabels, fractionLabels) {
    this.ratios?.destroy();
    this.fractions?.destroy();
    this.ratios = this.fractions = null;
    if (ratioLabels.length) {
      this.ratios = new LineChart(this.grid, {
        name: "update_ratios", title: "Update-to-weight ratio per layer", yLabel: "‖Δw‖ / ‖w‖", log: true,
        description: "(dotted: 1e-3; shaded: 1e-4 to 1e-2)", series: ratioLabels.map((label) => ({label})),
        band: {lo: 1e-4, mid: 1e-3, hi: 1e-2}});
    }
    if (fractionLabels.length) {
      this.fractions = new LineChart(this.grid, {
        name: "fractions", title: "Dead / saturated units per layer", yLabel: "fraction of units",
        series: fractionLabels.map((label) => ({label})),
        range: (u, min, max) => [0, Math.min(1, Math.max(0.05, (max || 0) * 1.15))]});   // 0 stays at the bottom
    }
  }

  destroy() {
    this.heatmap.destroy();
    this.ratios?.destroy();
    this.fractions?.destroy();
  }
}

// init_report (engine/diagnostics/init_report.py): {layers: {key: {type, output_mean, output_std, grad_std}}, ...};
// a layer's activation std is its output_std
export function initRows(report) {
  const layers = report && report.layers;
  if (!layers) return [];
  return Object.entries(layers).map(([key, l]) => ({
    key, type: l.type || "", activation_std: l.output_std ?? null, grad_std: l.grad_std ?? null}));
}

export function initReport(parent, report) {
  const rows = initRows(report);
  if (!rows.length) return null;
  const section = h("section", {class: "panel", id: "init-report"},
    h("h2", {}, "Initialization (step 0)"),
    h("p", {class: "hint"}, "Standard deviation of each layer's output and gradient before any update: ",
      "a good initialization keeps them of the same order across depth."));
  parent.append(section);
  const grid = h("div", {class: "charts"});
  section.append(grid);
  const chart = new LineChart(grid, {
    name: "init_report", title: "Activation and gradient std by depth", xLabel: "layer position", log: true,
    series: [{label: "activation std"}, {label: "gradient std"}]});
  chart.setData(rows.map((_, i) => i), [positiveOnly(rows.map((r) => r.activation_std)), positiveOnly(rows.map((r) => r.grad_std))]);
  section.append(table(["position", "layer", "activation std", "gradient std"], rows.map((r, i) =>
    h("tr", {dataset: {layer: r.key}}, h("td", {class: "num"}, i), h("td", {}, `${r.key} ${r.type}`),
      h("td", {class: "num"}, num(r.activation_std)), h("td", {class: "num"}, num(r.grad_std)))), {id: "init-table"}));
  return chart;
}

// findings, newest epoch last: severity in words and a mark, so it reads without colour
export function findingsTable(body, findings) {
  if (!findings.length) return fill(body, h("p", {class: "hint"}, "No findings: every rule stayed silent."));
  const marks = {error: "✕", warning: "▲", info: "●"};
  const rows = findings.map((f) => h("tr", {class: `finding severity-${f.severity}`, dataset: {code: f.code || ""}},
    h("td", {class: "num"}, f.epoch ?? "–"),
    h("td", {}, `${marks[f.severity] || "●"} ${f.severity || ""}`),
    h("td", {class: "mono"}, f.code || ""),
    h("td", {}, layerName(f.layer)),
    h("td", {class: "num"}, num(f.value), f.threshold !== undefined ? h("span", {class: "hint"}, ` (threshold ${num(f.threshold)})`) : null),
    h("td", {}, f.message || "", f.hint ? h("div", {class: "hint"}, `Hint: ${f.hint}`) : null)));
  return fill(body, table(["epoch", "severity", "rule", "layer", "value", "what it means"], rows, {id: "findings-table"}));
}

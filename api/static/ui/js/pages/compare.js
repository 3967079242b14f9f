// Two or more jobs side by side (#/compare?ids=A,B,...): their curves overlaid (e.g. Xavier vs He,
// SGD vs Adam on the same data) and a table of their hyperparameters and final metrics, the rows
// where they differ marked (in words too: "differs").
import {request} from "../api.js";
import {LineChart} from "../charts.js";
import {duration, fill, h, jobDuration, notice, num, statusBadge, table} from "../dom.js";
import {HEADLINE, column, initSummary, modelSummary, optimizerSummary, scheduleSummary} from "../series.js";

export const NAME = "compare";
export const MAX_JOBS = 8;

export async function render(main, page) {
  const ids = [...new Set((page.query.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean))].slice(0, MAX_JOBS);
  if (ids.length < 2) {
    fill(main, h("h1", {}, "Compare jobs"), notice("Tick two or more jobs in the jobs list, then “Compare selected”."),
         h("a", {href: "#/jobs"}, "Jobs"));
    return page.ready();
  }
  const runs = await Promise.all(ids.map(async (id) => {
    const [job, metrics] = await Promise.all([request(`jobs/${encodeURIComponent(id)}`, {signal: page.signal}),
                                              request(`jobs/${encodeURIComponent(id)}/metrics`, {signal: page.signal})]);
    return {job, epochs: metrics.epochs};
  }));
  const labels = uniqueLabels(runs.map((r) => r.job));
  const grid = h("div", {class: "charts"});
  fill(main, h("h1", {}, `Compare ${runs.length} jobs`), h("section", {class: "panel"}, h("h2", {}, "Curves"), grid),
       h("section", {class: "panel"}, h("h2", {}, "Hyperparameters and results"), paramTable(runs, labels)));
  const charts = overlay(grid, runs, labels);
  page.onLeave(() => charts.forEach((c) => c.destroy()));
  page.ready();
}

// a job's name, made unique with its short id when two share one
function uniqueLabels(jobs) {
  const counts = {};
  for (const j of jobs) counts[j.name || ""] = (counts[j.name || ""] || 0) + 1;
  return jobs.map((j) => (j.name && counts[j.name] === 1 ? j.name : `${j.name || "job"} ${j.id.slice(0, 8)}`));
}

// one chart per quantity, one series per job, on the union of their epochs
function overlay(grid, runs, labels) {
  const x = [...new Set(runs.flatMap((r) => r.epochs.map((e) => e.epoch)))].sort((a, b) => a - b);
  const headline = runs.some((r) => r.epochs.some((e) => "val_r2" in e)) ? HEADLINE.regression : HEADLINE.classification;
  const quantities = [["val_loss", "Validation loss"], ["train_loss", "Training loss"], [headline, headline.replace("val_", "Validation ")]];
  return quantities.map(([name, title]) => {
    const chart = new LineChart(grid, {name: `compare_${name}`, title, yLabel: name, series: labels.map((label) => ({label}))});
    chart.setData(x, runs.map((r) => {
      const byEpoch = new Map(r.epochs.map((e) => [e.epoch, e]));
      return x.map((epoch) => (byEpoch.has(epoch) ? column([byEpoch.get(epoch)], name)[0] : null));
    }));
    return chart;
  });
}

const ROWS = [
  ["status", (j) => statusBadge(j.status), (j) => j.status],
  ["model", (j) => modelSummary(j.request)],
  ["init", (j) => initSummary(j.request)],
  ["optimizer", (j) => optimizerSummary(j.request.optimizer)],
  ["schedule", (j) => scheduleSummary(j.request.schedule)],
  ["loss", (j) => (j.request.loss ? j.request.loss.type : "–")],
  ["epochs", (j) => j.request.epochs], ["batch size", (j) => j.request.batch_size], ["seed", (j) => j.request.seed],
  ["dataset", (j) => (j.dataset_id || "(deleted)").slice(0, 8)],
  ["parameters", (j) => (j.n_parameters ?? 0).toLocaleString()],
];

function finals(run) {
  const last = run.epochs[run.epochs.length - 1] || {};
  return [["final train loss", num(last.train_loss)], ["final val loss", num(last.val_loss)],
          ["final val accuracy", num(last.val_accuracy)], ["final val R²", num(last.val_r2)],
          ["best epoch", run.job.result ? run.job.result.best_epoch ?? "–" : "–"],
          ["duration", duration(jobDuration(run.job))]];
}

function paramTable(runs, labels) {
  const rows = ROWS.map(([name, show, key = show]) => {
    const keys = runs.map((r) => String(key(r.job)));
    return [name, runs.map((r) => show(r.job)), new Set(keys).size > 1];
  });
  const results = runs.map(finals);
  results[0].forEach(([name], i) => {
    const values = results.map((f) => f[i][1]);
    if (values.some((v) => v !== "–")) rows.push([name, values, new Set(values.map(String)).size > 1]);
  });
  return table(["", ...labels.map((l, i) => h("a", {href: `#/jobs/${encodeURIComponent(runs[i].job.id)}`}, l))],
    rows.map(([name, values, differs]) => h("tr", {class: differs ? "differs" : ""},
      h("th", {scope: "row"}, name, differs ? h("span", {class: "hint"}, " (differs)") : null),
      values.map((v) => h("td", {}, v)))), {id: "compare-table"});
}

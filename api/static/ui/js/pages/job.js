// One job: status, progress and actions (download weights, cancel), its curves (loss, accuracy or
// MAE / R², learning rate) and gradient health, its findings and init report where the server has
// them. A queued or running job is followed through its events stream (GET /v1/jobs/{id}/events):
// each finished epoch extends the curves, progress and status update in place.
import {download, request} from "../api.js";
import {LineChart} from "../charts.js";
import {duration, fill, h, jobDuration, notice, num, statusBadge, when} from "../dom.js";
import {
  TASK_METRICS, column, findingMarkers, initSummary, modelSummary, optimizerSummary, scheduleSummary, upsertEpoch,
} from "../series.js";
import {follow} from "../sse.js";
import {Health, findingsTable, initReport} from "./job_health.js";
import {SequencePanels} from "./job_sequence.js";

export const NAME = "job";
const ACTIVE = new Set(["queued", "running"]);

export async function render(main, page) {
  const id = encodeURIComponent(page.id), signal = page.signal;
  const [job, metrics, found] = await Promise.all([
    request(`jobs/${id}`, {signal}), request(`jobs/${id}/metrics`, {signal}),
    request(`jobs/${id}/findings?limit=100`, {signal})]);
  const findings = found.items;
  const view = new JobView(main, job, metrics.epochs, findings, page);
  page.onLeave(() => view.destroy());
  page.ready();
  if (ACTIVE.has(job.status)) {
    follow(page.id, {signal, onEvent: (kind, data) => view.event(kind, data),
                     onTrouble: (e) => view.say(`Live updates interrupted (${e.message}); reconnecting…`)})
      .catch((e) => view.say(`Live updates stopped: ${e.message}`));
  }
}

class JobView {
  constructor(main, job, epochs, findings, page) {
    Object.assign(this, {job, epochs: epochs.slice(), findings, page, pending: false});
    this.header = h("section", {class: "panel", id: "job-header"});
    this.curves = h("div", {class: "charts"});
    this.empty = notice("No epoch has finished yet: the curves grow as epochs end.");
    this.findingsBody = h("div");
    fill(main, this.header,
         h("section", {class: "panel", id: "curves"}, h("h2", {}, "Curves"), this.empty, this.curves),
         findings ? h("section", {class: "panel", id: "findings"}, h("h2", {}, "Findings"), this.findingsBody) : null);
    this.charts = this.makeCurves(main);
    this.health = new Health(main);
    this.sequence = new SequencePanels({main, curves: this.curves, healthGrid: this.health.grid, job, page});
    this.initChart = initReport(main, job.init_report);
    main.append(modelPanel(job));
    this.drawHeader();
    this.redraw();
  }

  makeCurves() {
    const task = this.taskOf(), metrics = TASK_METRICS[task];
    const charts = {
      loss: new LineChart(this.curves, {name: "loss", title: "Loss", yLabel: "loss",
                                        series: [{label: "train_loss"}, {label: "val_loss"}]}),
      metric: new LineChart(this.curves, {
        name: "metric", title: task === "regression" ? "MAE and R²" : "Accuracy", yLabel: metrics.label,
        rightLabel: metrics.rightLabel, series: [...metrics.left.map((label) => ({label})),
                                                 ...metrics.right.map((label) => ({label, scale: "right"}))]}),
      lr: new LineChart(this.curves, {name: "lr", title: "Learning rate", yLabel: "lr", series: [{label: "lr"}]}),
    };
    charts.metric.names = [...metrics.left, ...metrics.right];
    return charts;
  }

  // regression reports MAE / R², classification accuracy: known from the metrics once an epoch is in
  taskOf() {
    const any = this.epochs[0] || this.job.latest_metrics || {};
    return "train_mae" in any || "val_r2" in any || this.job.task === "regression" ? "regression" : "classification";
  }

  event(kind, data) {
    if (kind === "epoch") upsertEpoch(this.epochs, data);
    else if (kind === "progress") this.job.progress = data;
    else if (kind === "finding" && this.findings) this.findings.push(data);
    else if (kind === "status") {
      Object.assign(this.job, {status: data.status, error: data.error});
      if (!ACTIVE.has(data.status)) { this.sequence.finished(); this.refresh(); }
    }
    this.schedule();
  }

  // many events arrive together (a reconnect replays them): one redraw per animation frame
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.drawHeader(); this.redraw(); });
  }

  async refresh() {
    try {
      Object.assign(this.job, await request(`jobs/${encodeURIComponent(this.job.id)}`, {signal: this.page.signal}));
      this.schedule();
    } catch { /* the page was left, or the next event will tell */ }
  }

  redraw() {
    const e = this.epochs, x = e.map((r) => r.epoch);
    this.empty.hidden = e.length > 0;
    this.charts.loss.setData(x, [column(e, "train_loss"), column(e, "val_loss")]);
    this.charts.metric.setData(x, this.charts.metric.names.map((n) => column(e, n)));
    this.charts.lr.setData(x, [column(e, "lr")]);
    this.health.update(e);
    this.sequence.update(e);
    if (this.findings) {
      const markers = findingMarkers(this.findings, e);
      this.charts.loss.setMarkers(markers);
      this.charts.metric.setMarkers(markers);
      findingsTable(this.findingsBody, this.findings);
    }
  }

  say(text) {
    const old = this.header.querySelector(".live-note");
    if (old) old.textContent = text; else this.header.append(h("p", {class: "hint live-note"}, text));
  }

  drawHeader() {
    const job = this.job, p = job.progress, active = ACTIVE.has(job.status);
    fill(this.header,
      h("h1", {}, job.name || "(unnamed job)", " ", statusBadge(job.status)),
      h("p", {class: "mono hint"}, job.id),
      h("p", {}, (job.tags || []).map((t) => h("a", {class: "tag", href: `#/jobs?tag=${encodeURIComponent(t)}`}, t))),
      h("div", {class: "progress-row"}, h("progress", {max: 1, value: p.fraction, id: "job-progress", "aria-label": "progress"}),
        ` epoch ${p.epoch} / ${p.epochs} · step ${p.step}${p.total_steps ? ` / ${p.total_steps}` : ""}`),
      facts(job),
      job.error ? h("div", {class: "notice notice-error", role: "alert", id: "job-error"},
                    h("strong", {}, job.error.code), `: ${job.error.message}`) : null,
      h("div", {class: "actions"},
        h("button", {type: "button", id: "download-weights", disabled: job.status !== "succeeded",
                     title: job.status === "succeeded" ? "" : "weights exist once the job has succeeded",
                     onclick: () => this.act(() => download(`jobs/${encodeURIComponent(job.id)}/weights`, `${job.id}.safetensors`))},
          "Download weights (.safetensors)"),
        active ? h("button", {type: "button", id: "cancel-job", onclick: () => this.cancel()},
                   job.cancel_requested ? "Cancelling…" : "Cancel") : null,
        h("a", {href: `#/jobs/${encodeURIComponent(job.id)}/landscape`}, "Loss landscape")));
  }

  async cancel() {
    if (!window.confirm(`Cancel job ${this.job.name || this.job.id}?`)) return;
    await this.act(async () => {
      Object.assign(this.job, await request(`jobs/${encodeURIComponent(this.job.id)}/cancel`, {method: "POST"}));
      this.drawHeader();
    });
  }

  async act(fn) {
    try { await fn(); } catch (e) { this.header.append(notice(`${e.status || ""} ${e.message}`, "error")); }
  }

  destroy() {
    Object.values(this.charts).forEach((c) => c.destroy());
    this.health.destroy();
    this.sequence.destroy();
    this.initChart?.destroy();
  }
}

function facts(job) {
  const m = job.latest_metrics || {}, r = job.result || {};
  const items = [
    ["latest train loss", num(m.train_loss)], ["latest val loss", num(m.val_loss)],
    ["best epoch", r.best_epoch ?? "–"], ["duration", duration(jobDuration(job))],
    ["parameters", (job.n_parameters ?? 0).toLocaleString()], ["device", job.worker_device || job.device],
    ["created", when(job.created_at)], ["attempts", job.attempts],
  ];
  const world = m.world_size || job.request?.distributed?.processes || 1;
  if (world > 1) {   // data parallel (docs/distributed.md): each rank's mean step time in the latest epoch
    const times = (m.rank_step_time_s || []).map((t, rank) => `${rank}: ${(t * 1000).toFixed(1)} ms`);
    items.push(["processes", world], ["step time per rank", times.join(", ") || "–"]);
  }
  return h("dl", {class: "facts"}, items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

function modelPanel(job) {
  const r = job.request || {};
  const items = [["model", modelSummary(r)], ["init", initSummary(r)], ["loss", r.loss ? r.loss.type : "–"],
    ["optimizer", optimizerSummary(r.optimizer)], ["schedule", scheduleSummary(r.schedule)],
    ["epochs", r.epochs], ["batch size", r.batch_size], ["validation split", r.validation_split], ["seed", r.seed],
    ["dataset", job.dataset_id || "(deleted)"]];
  return h("section", {class: "panel", id: "model"}, h("h2", {}, "Model and training"),
    h("dl", {class: "facts"}, items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v ?? "–")))));
}

// The key's jobs: name, tags, status, progress, latest loss and validation metric, duration;
// filters by status, tag and name (kept in the URL's hash); refreshed every REFRESH_MS while the
// tab is visible (one GET /v1/jobs: modest beside the per-key rate limits); two or more ticked
// jobs open the compare page.
import {request} from "../api.js";
import {duration, fill, h, jobDuration, notice, num, shortId, statusBadge, table, when} from "../dom.js";
import {HEADLINE} from "../series.js";
import {sleep} from "../sse.js";

export const NAME = "jobs";
const REFRESH_MS = 5000;
const PAGE_SIZE = 50;
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];

export async function render(main, page) {
  const q = page.query, selected = new Set();
  const filters = filterForm(q);
  const body = h("div", {class: "jobs-body"});
  const compareButton = h("button", {type: "button", disabled: true, id: "compare-selected",
    onclick: () => { location.hash = `#/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`; }},
    "Compare selected");
  const updated = h("span", {class: "hint", "aria-live": "off"});
  fill(main, h("h1", {}, "Jobs"), filters, h("div", {class: "toolbar"}, compareButton, updated), body);
  const onTick = (id, checked) => {
    checked ? selected.add(id) : selected.delete(id);
    compareButton.disabled = selected.size < 2;
    compareButton.textContent = `Compare selected (${selected.size})`;
  };
  let first = true;
  while (!page.signal.aborted) {
    if (document.visibilityState === "visible" || first) {
      const list = await request("jobs", {signal: page.signal, params: listParams(q)});
      fill(body, jobsTable(list, selected, onTick), pager(list, q));
      updated.textContent = `${list.total} job(s); updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
      if (first) page.ready();
      first = false;
    }
    await sleep(REFRESH_MS, page.signal);
  }
}

function listParams(q) {
  const tags = (q.get("tag") || "").split(",").map((t) => t.trim()).filter(Boolean);
  return {status: q.get("status") || undefined, name: q.get("name") || undefined, tag: tags,
          limit: PAGE_SIZE, offset: Number(q.get("offset") || 0)};
}

// filters live in the hash (#/jobs?status=running&tag=a,b), so a reload or a shared link keeps them
function filterForm(q) {
  const status = h("select", {id: "filter-status"}, STATUSES.map((s) =>
    h("option", {value: s, selected: s === (q.get("status") || "")}, s || "any status")));
  const tag = h("input", {id: "filter-tag", value: q.get("tag") || "", placeholder: "tag, another"});
  const name = h("input", {id: "filter-name", value: q.get("name") || "", placeholder: "exact name"});
  const apply = (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of [["status", status.value], ["tag", tag.value.trim()], ["name", name.value.trim()]]) if (v) next.set(k, v);
    location.hash = `#/jobs${next.toString() ? `?${next}` : ""}`;
  };
  status.addEventListener("change", apply);
  return h("form", {class: "filters", onsubmit: apply},
    h("label", {}, "Status ", status), h("label", {}, "Tags ", tag), h("label", {}, "Name ", name),
    h("button", {type: "submit"}, "Filter"), h("a", {href: "#/jobs"}, "clear"));
}

function jobsTable(list, selected, onTick) {
  if (!list.items.length) return notice("No jobs match. Submit one with `chainrule jobs submit` or POST /v1/jobs.");
  const rows = list.items.map((job) => jobRow(job, selected, onTick));
  return table(["", "name", "status", "progress", "loss", "validation", "findings", "duration", "tags", "created"], rows,
               {class: "jobs", id: "jobs-table"});
}

function jobRow(job, selected, onTick) {
  const m = job.latest_metrics || {}, p = job.progress;
  const metric = headline(job, m);
  const tick = h("input", {type: "checkbox", checked: selected.has(job.id), "aria-label": `select ${job.name || job.id} to compare`,
                           onchange: (e) => onTick(job.id, e.target.checked)});
  return h("tr", {dataset: {job: job.id}},
    h("td", {}, tick),
    h("td", {}, h("a", {href: `#/jobs/${encodeURIComponent(job.id)}`}, job.name || "(unnamed)"),
      h("div", {class: "mono hint"}, shortId(job.id))),
    h("td", {}, statusBadge(job.status), job.error ? h("div", {class: "hint"}, job.error.code) : null),
    h("td", {}, h("progress", {max: 1, value: p.fraction, "aria-label": "progress"}),
      h("div", {class: "hint"}, `epoch ${p.epoch} / ${p.epochs}`)),
    h("td", {class: "num"}, num(m.train_loss)),
    h("td", {class: "num"}, metric),
    h("td", {}, findingCounts(job.findings)),
    h("td", {class: "num"}, duration(jobDuration(job))),
    h("td", {}, (job.tags || []).map((t) => h("a", {class: "tag", href: `#/jobs?tag=${encodeURIComponent(t)}`}, t))),
    h("td", {}, when(job.created_at)));
}

// "2 errors, 1 warning" from the diagnostics rules' counts (the latest finding's message on hover)
function findingCounts(findings) {
  if (!findings) return "–";
  const said = ["error", "warning", "info"].filter((s) => findings.counts[s])
    .map((s) => `${findings.counts[s]} ${s}${findings.counts[s] > 1 ? "s" : ""}`);
  if (!said.length) return "none";
  return h("span", {class: `finding-count ${findings.counts.error ? "error" : "warning"}`,
                    title: findings.latest ? findings.latest.message : ""}, said.join(", "));
}

// the validation metric by task, else the validation loss
function headline(job, m) {
  const name = HEADLINE[job.task] || (m.val_accuracy !== undefined ? "val_accuracy" : "val_r2");
  if (typeof m[name] === "number") return `${name === "val_r2" ? "R²" : "accuracy"} ${num(m[name])}`;
  return typeof m.val_loss === "number" ? `val loss ${num(m.val_loss)}` : "–";
}

function pager(list, q) {
  if (list.total <= list.limit) return null;
  const at = (offset) => { const n = new URLSearchParams(q); n.set("offset", offset); return `#/jobs?${n}`; };
  return h("p", {class: "pager"},
    list.offset > 0 ? h("a", {href: at(Math.max(0, list.offset - list.limit))}, "← newer") : null,
    ` ${list.offset + 1}–${Math.min(list.offset + list.limit, list.total)} of ${list.total} `,
    list.offset + list.limit < list.total ? h("a", {href: at(list.offset + list.limit)}, "older →") : null);
}

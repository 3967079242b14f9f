// Building the page from data without innerHTML (nothing a user typed is ever parsed as HTML),
// and the number / time formats every page shares.

// h("a", {href: "#/jobs", class: "x", onclick: fn}, "text", child, ...) -> Element
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

// replace an element's content
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function num(value, digits = 4) {
  if (value === undefined || value === null) return "–";
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) {
    return Number(value.toExponential(digits - 1)).toExponential();    // 5e-4, 1.235e-5
  }
  return Number(value.toPrecision(digits)).toString();
}

export function percent(value) {
  return value === undefined || value === null ? "–" : `${(100 * value).toFixed(1)} %`;
}

export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function duration(seconds) {
  if (seconds === undefined || seconds === null || !Number.isFinite(seconds)) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

// how long a job ran (or has been running), from its timestamps
export function jobDuration(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {dateStyle: "short", timeStyle: "medium"});
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "–";
}

// a status as text with a shape, so it reads without colour
const STATUS_MARKS = {queued: "○", running: "◐", succeeded: "●", failed: "✕", cancelled: "⊘"};
export function statusBadge(status) {
  return h("span", {class: `status status-${status}`, dataset: {status}},
           `${STATUS_MARKS[status] || "?"} ${status}`);
}

export function table(headers, rows, attrs = {}) {
  return h("div", {class: "scroll"},
    h("table", attrs,
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", {scope: "col"}, name)))),
      h("tbody", {}, rows)));
}

export function notice(text, kind = "info") {
  return h("p", {class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status"}, text);
}

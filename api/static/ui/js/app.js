// The dashboard's shell: the key form, the navigation and a hash router (#/jobs, #/jobs/ID,
// #/jobs/ID/landscape, #/compare?ids=A,B, #/datasets). Each page is a module whose render(main,
// page) draws it; page.signal aborts its requests and streams when the user moves on.
import {ApiError, key, request, whenUnauthorized} from "./api.js";
import {debug} from "./charts.js";
import {fill, h, notice} from "./dom.js";
import * as compare from "./pages/compare.js";
import * as datasets from "./pages/datasets.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as landscape from "./pages/landscape.js";

const main = document.getElementById("main");
const ROUTES = [
  [/^(?:jobs)?$/, jobs, () => ({})],
  [/^jobs\/([^/]+)$/, job, (m) => ({id: decodeURIComponent(m[1])})],
  [/^jobs\/([^/]+)\/landscape$/, landscape, (m) => ({id: decodeURIComponent(m[1])})],
  [/^compare$/, compare, () => ({})],
  [/^datasets$/, datasets, () => ({})],
];
let current = null;   // {controller, cleanups}

// The page context a render gets: its query, an abort signal, cleanups, and ready() for the tests.
function newPage(name, params, query) {
  const controller = new AbortController(), cleanups = [];
  current = {controller, cleanups};
  Object.assign(debug, {page: name, ready: false, readyAt: null, drawnAt: null});
  return {
    ...params, query, signal: controller.signal,
    onLeave: (fn) => cleanups.push(fn),
    // what it first loaded is on the page; drawnAt: the frame that paints it (ms since navigation)
    ready: () => {
      Object.assign(debug, {ready: true, readyAt: performance.now()});
      requestAnimationFrame(() => { debug.drawnAt = performance.now(); });
    },
  };
}

function leave() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups.splice(0)) fn();
  current = null;
}

async function route() {
  leave();
  markNav();
  if (!key.get()) return keyForm();
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const query = new URLSearchParams(search);
  for (const [pattern, module, params] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    const page = newPage(module.NAME, params(match), query);
    try {
      await module.render(main, page);
    } catch (error) {
      if (page.signal.aborted || error.name === "AbortError" || (error instanceof ApiError && error.status === 401)) return;
      fill(main, notice(error instanceof ApiError ? `${error.status}: ${error.message}` : String(error), "error"));
      page.ready();
    }
    return;
  }
  fill(main, notice(`No page at #/${path}. Go to the jobs list.`, "error"), h("a", {href: "#/jobs"}, "Jobs"));
}

function markNav() {
  const path = location.hash.replace(/^#\/?/, "").split(/[/?]/)[0] || "jobs";
  for (const link of document.querySelectorAll("nav a")) {
    link.toggleAttribute("aria-current", link.dataset.nav === path);
  }
  document.getElementById("signout").hidden = !key.get();
}

function keyForm(message = "") {
  debug.page = "key";
  const input = h("input", {type: "password", id: "key-input", autocomplete: "off", spellcheck: "false",
                            placeholder: "cr_…", required: true});
  const status = h("p", {class: "notice notice-error", role: "alert", hidden: !message}, message);
  const form = h("form", {class: "key-form", onsubmit: (e) => { e.preventDefault(); signIn(input.value.trim(), status); }},
    h("h1", {}, "Sign in with an API key"),
    h("label", {for: "key-input"}, "API key"),
    input,
    h("button", {type: "submit"}, "Use this key"),
    status,
    h("p", {class: "hint"}, "Make one with ", h("code", {}, "chainrule keys create NAME"),
      ". It is kept in this browser tab only (sessionStorage) and sent to this server's /v1 API as ",
      h("code", {}, "Authorization: Bearer"), "."));
  fill(main, form);
  input.focus();
  debug.ready = true;
}

async function signIn(value, status) {
  if (!value) return;
  key.set(value);
  try {
    await request("jobs", {params: {limit: 1}});
  } catch (error) {
    key.clear();
    status.textContent = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error);
    status.hidden = false;
    return;
  }
  if (!location.hash || location.hash === "#/") location.hash = "#/jobs";
  else route();
}

whenUnauthorized((error) => {
  key.clear();
  leave();
  markNav();
  keyForm(`The server refused the key (${error.message}); enter a valid one.`);
});

document.getElementById("signout").addEventListener("click", () => {
  key.clear();
  route();
});
window.addEventListener("hashchange", route);
route();

// The same /v1 API every client uses, with the key from this tab's sessionStorage as a Bearer
// token. The key never goes into a URL: not in links, not in the events stream (read with fetch,
// which can send the header; EventSource cannot).

const KEY_ITEM = "chainrule.key";
export const API_ROOT = new URL("../v1/", document.baseURI);   // /ui/ -> /v1/, behind a prefix too

export class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY_ITEM),
  set: (value) => sessionStorage.setItem(KEY_ITEM, value),
  clear: () => sessionStorage.removeItem(KEY_ITEM),
};

// called with the ApiError when the server refuses the key (set by app.js: back to the key form)
let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

export function url(path, params = {}) {
  const u = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [name, value] of Object.entries(params)) {
    for (const v of [].concat(value)) if (v !== undefined && v !== null && v !== "") u.searchParams.append(name, v);
  }
  return u;
}

export function headers(extra = {}) {
  const k = key.get();
  return {...(k ? {Authorization: `Bearer ${k}`} : {}), ...extra};
}

// the API's error detail as one sentence: a message, or a 422's list of {loc, msg}
export function errorText(detail, fallback) {
  if (Array.isArray(detail)) return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ");
  return typeof detail === "string" ? detail : fallback;
}

export async function check(response) {
  if (response.ok) return response;
  let detail = null;
  try { detail = (await response.json()).detail; } catch { /* not JSON */ }
  const error = new ApiError(response.status, errorText(detail, `${response.status} ${response.statusText}`), detail);
  if (response.status === 401) onUnauthorized(error);
  throw error;
}

// request("jobs", {params: {status: "running"}}) -> parsed JSON; errors raise ApiError
export async function request(path, {method = "GET", params, body, signal} = {}) {
  const response = await fetch(url(path, params), {
    method, signal, cache: "no-store",
    headers: headers(body === undefined ? {} : {"Content-Type": "application/json"}),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await check(response);
  return response.status === 204 ? null : response.json();
}

// a file the API sends (weights), saved through a link to an in-memory blob
export async function download(path, filename) {
  const response = await check(await fetch(url(path), {headers: headers(), cache: "no-store"}));
  const href = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), {href, download: filename});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

// What this server offers beyond the core API, read once from its OpenAPI document: the
// diagnostics routes (findings, landscape) arrived with a later release, and asking an older
// server for them would only produce 404s (and console errors).
let paths = null;

async function routes() {
  if (!paths) {
    paths = fetch(new URL("../openapi.json", document.baseURI), {cache: "no-store"})
      .then((r) => (r.ok ? r.json() : {paths: {}}))
      .then((doc) => new Set(Object.keys(doc.paths || {})))
      .catch(() => new Set());
  }
  return paths;
}

// has("findings"): does the server have GET /v1/jobs/{id}/findings (whatever the parameter's name)?
export async function has(what) {
  const pattern = new RegExp(`^/v1/jobs/\\{[^}]+\\}/${what}$`);
  for (const path of await routes()) if (pattern.test(path)) return true;
  return false;
}

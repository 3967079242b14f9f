// From what the API returns (GET /v1/jobs/{id}/metrics' epochs, a job's request) to what the
// charts and tables show. Pure functions of their arguments.

// the metrics a task reports besides the loss: [left-axis names, right-axis names, axis labels]
export const TASK_METRICS = {
  classification: {left: ["train_accuracy", "val_accuracy"], right: [], label: "accuracy", rightLabel: null},
  regression: {left: ["train_mae", "val_mae"], right: ["train_r2", "val_r2"], label: "MAE", rightLabel: "R²"},
};

// the validation metric that says how good a job is, by task
export const HEADLINE = {classification: "val_accuracy", regression: "val_r2"};

export function column(epochs, name) {
  return epochs.map((e) => (typeof e[name] === "number" ? e[name] : null));
}

// Per-layer `field` over epochs: the layers that report it (in layer order, the input first) and
// values[layer][epoch] (null where an epoch lacks it).
export function layerTable(epochs, field) {
  const layers = new Map();
  for (const e of epochs) {
    for (const [key, entry] of Object.entries(e.layers || {})) {
      if (entry && field in entry && !layers.has(key)) layers.set(key, entry.type || "");
    }
  }
  const keys = [...layers.keys()];
  const values = keys.map((key) => epochs.map((e) => {
    const v = e.layers && e.layers[key] ? e.layers[key][field] : undefined;
    return typeof v === "number" ? v : null;
  }));
  return {keys, labels: keys.map((k) => `${k} ${layers.get(k)}`.trim()), values};
}

// Findings (issue 6) as chart markers: from the findings list and from the epochs' own `findings`
// entries, one marker per (epoch, code).
export function findingMarkers(findings, epochs = []) {
  const seen = new Map();
  const all = [...findings, ...epochs.flatMap((e) => (e.findings || []).map((f) => ({epoch: e.epoch, ...f})))];
  for (const f of all) {
    if (typeof f.epoch !== "number") continue;
    const id = `${f.epoch}:${f.code}`;
    if (!seen.has(id)) seen.set(id, {x: f.epoch, label: f.code || "finding", severity: f.severity});
  }
  return [...seen.values()];
}

// upsert one epoch's entry into a list kept sorted by epoch (an epoch re-run after a resume replaces it)
export function upsertEpoch(epochs, entry) {
  const i = epochs.findIndex((e) => e.epoch >= entry.epoch);
  if (i < 0) epochs.push(entry);
  else if (epochs[i].epoch === entry.epoch) epochs[i] = entry;
  else epochs.splice(i, 0, entry);
  return epochs;
}

// a layer's key and type, however a finding names it ({key, type} or a bare key)
export function layerName(layer) {
  if (!layer) return "";
  if (typeof layer === "string") return layer;
  return [layer.key, layer.type].filter((v) => v !== undefined && v !== null).join(" ");
}

// the network in one line: "linear 32 (he_normal) → relu → linear 3"; a repeated block once with
// its count: "(linear 16 → sigmoid) × 8 → linear 3"
export function modelSummary(request) {
  const layers = (request && request.model && request.model.layers) || [];
  const names = layers.map((l) => [l.type, l.out_features ?? l.out_channels ?? "", l.init ? `(${l.init})` : ""]
    .filter((v) => v !== "").join(" "));
  return collapseRepeats(names).join(" → ");
}

function collapseRepeats(names) {
  const out = [];
  for (let i = 0; i < names.length;) {
    let best = {size: 1, count: 1};
    for (let size = 1; size <= 12; size++) {          // a transformer block is about 8 layers
      let count = 1;
      while (names.slice(i, i + size).join() === names.slice(i + count * size, i + (count + 1) * size).join()) count++;
      if (count > 1 && count * size > best.count * best.size) best = {size, count};
    }
    const block = names.slice(i, i + best.size).join(" → ");
    out.push(best.count > 1 ? `${best.size > 1 ? `(${block})` : block} × ${best.count}` : block);
    i += best.size * best.count;
  }
  return out;
}

export function optimizerSummary(optimizer) {
  if (!optimizer) return "–";
  return `${optimizer.type} lr=${optimizer.lr}${optimizer.momentum ? ` momentum=${optimizer.momentum}` : ""}` +
    `${optimizer.weight_decay ? ` wd=${optimizer.weight_decay}` : ""}`;
}

// the inits a job uses, as a set of names ("default" where a layer leaves it to the engine)
export function initSummary(request) {
  const layers = ((request && request.model && request.model.layers) || []).filter((l) => "init" in l);
  return [...new Set(layers.map((l) => l.init || "default"))].join(", ") || "–";
}

export function scheduleSummary(schedule) {
  if (!schedule) return "–";
  const {type, warmup_steps: warmup, warmup_start_factor: _f, ...rest} = schedule;
  const args = Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(" ");
  return `${type}${args ? ` ${args}` : ""}${warmup ? `, warm-up ${warmup} steps` : ""}`;
}

// a layer's repeat block: "blocks.0" for "blocks.0.attn" (engine/spec/repeat.py names the layers of
// block i `{name}.{i}.{layer}`); null for a layer outside any block
export function blockOf(key) {
  const m = /^(.+\.\d+)\.[^.]+$/.exec(key);
  return m ? m[1] : null;
}

// Per-layer `field` (a norm) grouped by block: a block's value is the 2-norm of its layers' values,
// sqrt(sum v²), i.e. the norm of all its parameters' gradients together; layers outside a block keep
// their own row. {keys, labels, values, blocks}: blocks is how many block rows there are (0: none).
export function blockTable(epochs, field) {
  const t = layerTable(epochs, field), rows = new Map();
  t.keys.forEach((key, i) => {
    const block = blockOf(key), name = block ?? t.labels[i];
    if (!rows.has(name)) rows.set(name, {block: block !== null, members: []});
    rows.get(name).members.push(t.values[i]);
  });
  const labels = [...rows.keys()], entries = [...rows.values()];
  const values = entries.map(({members}) => epochs.map((_, j) => {
    const vs = members.map((m) => m[j]);
    return vs.some((v) => v === null) ? null : Math.sqrt(vs.reduce((s, v) => s + v * v, 0));
  }));
  return {keys: labels, labels, values, blocks: entries.filter((e) => e.block).length};
}

// Each attention head's entropy over epochs: one series per (layer, head), and the uniform value
// (log T, causal: the mean of log(i + 1)) the heads start near.
export function entropyTable(epochs) {
  const t = layerTable(epochs, "attention_entropy"), labels = [], values = [];
  const heads = (i) => Math.max(0, ...epochs.map((e) => {
    const v = e.layers && e.layers[t.keys[i]] && e.layers[t.keys[i]].attention_entropy;
    return Array.isArray(v) ? v.length : 0;
  }));
  t.keys.forEach((key, i) => {
    for (let head = 0; head < heads(i); head++) {
      labels.push(`${key} head ${head}`);
      values.push(epochs.map((e) => {
        const v = e.layers && e.layers[key] && e.layers[key].attention_entropy;
        return Array.isArray(v) && typeof v[head] === "number" ? v[head] : null;
      }));
    }
  });
  const uniform = epochs.map((e) => {
    const entry = Object.values(e.layers || {}).find((l) => typeof l.attention_entropy_max === "number");
    return entry ? entry.attention_entropy_max : null;
  });
  return {labels, values, uniform};
}

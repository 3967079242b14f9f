// A sequence model's panels on the job page, drawn where the job has them:
//   perplexity -> curves of exp(loss) per token (language models), beside the loss
//   gradient norm per block -> heat map, one row per repeat block (blocks.0, blocks.1, ...; a block's
//                              norm is the 2-norm of its layers' gradients) and per layer outside them
//   attention entropy -> one line per head over epochs, against the uniform value the heads start at
//   attention map -> GET /v1/jobs/{id}/attention: one head's weights on the start of the validation
//                    text, queries down and keys across; the final weights, or a running job's
//                    latest checkpoint (refreshed as epochs end)
import {request} from "../api.js";
import {LineChart} from "../charts.js";
import {fill, h, num} from "../dom.js";
import {Heatmap} from "../heatmap.js";
import {blockTable, column, entropyTable} from "../series.js";

const REFRESH_MS = 5000;       // a running job's map: at most this often, as epochs end

export function hasAttention(job) {
  return JSON.stringify((job.request || {}).model || {}).includes('"self_attention"');
}

// a token as a label: the invisible ones made visible
function shown(token) {
  return token.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥");
}

export class SequencePanels {
  constructor({main, curves, healthGrid, job, page}) {
    Object.assign(this, {main, curves, healthGrid, job, page, perplexity: null, blocks: null,
                         entropy: null, entropyLabels: "", fetchedAt: 0, fetchedEpoch: null, maps: null});
    if (hasAttention(job)) this.makeAttention();
  }

  update(epochs) {
    const x = epochs.map((e) => e.epoch);
    if (!this.perplexity && epochs.some((e) => typeof e.val_perplexity === "number" || typeof e.train_perplexity === "number")) {
      this.perplexity = new LineChart(this.curves, {name: "perplexity", title: "Perplexity", yLabel: "exp(loss)", log: true,
        description: "(the loss per token as a number of equally likely choices)",
        series: [{label: "train_perplexity"}, {label: "val_perplexity"}]});
    }
    this.perplexity?.setData(x, [column(epochs, "train_perplexity"), column(epochs, "val_perplexity")]);
    const blocks = blockTable(epochs, "grad_norm");
    if (blocks.blocks && !this.blocks) {
      this.blocks = new Heatmap(this.healthGrid, {name: "block_grad_norms", title: "Gradient norm per block",
        xLabel: "epoch", yLabel: "", valueLabel: "grad norm", description: "(each block's layers together; input at the top);"});
    }
    this.blocks?.setData(x, blocks.labels, blocks.values);
    if (this.entropySection) this.updateEntropy(x, epochs);
    const last = epochs.length ? epochs[epochs.length - 1].epoch : null;
    if (this.mapBox && last !== this.fetchedEpoch && Date.now() - this.fetchedAt > REFRESH_MS) this.loadMaps(last);
  }

  // the job ended: its map comes from the final weights now, at the next update
  finished() {
    Object.assign(this, {fetchedAt: 0, fetchedEpoch: undefined});
  }

  makeAttention() {
    this.entropySection = h("section", {class: "panel", id: "attention"}, h("h2", {}, "Attention"),
      h("p", {class: "hint"}, "Entropy of each head's attention weights, -Σ p log p per query in nats: near 0 a head ",
        "looks at one token; near the uniform line it spreads its weight over every token it may see."));
    this.entropyGrid = h("div", {class: "charts"});
    this.layerSelect = h("select", {id: "attention-layer", "aria-label": "attention layer", onchange: () => this.drawMap()});
    this.headSelect = h("select", {id: "attention-head", "aria-label": "attention head", onchange: () => this.drawMap()});
    this.mapNote = h("p", {class: "hint", id: "attention-source"});
    this.mapBox = h("div", {class: "charts"});
    this.entropySection.append(this.entropyGrid,
      h("h3", {}, "Attention map"),
      h("div", {class: "actions"}, h("label", {}, "layer ", this.layerSelect), h("label", {}, " head ", this.headSelect),
        h("button", {type: "button", id: "attention-refresh", onclick: () => this.loadMaps(this.fetchedEpoch)}, "Refresh")),
      this.mapNote, this.mapBox);
    this.main.append(this.entropySection);
    this.heatmap = new Heatmap(this.mapBox, {name: "attention_map", title: "Attention weights", xLabel: "key",
      yLabel: "query ", valueLabel: "weight", log: false, rowHeight: 9, fixed: [0, 1],
      description: "(row: a query token; column: the token it attends to);"});
  }

  updateEntropy(x, epochs) {
    const t = entropyTable(epochs);
    const labels = JSON.stringify(t.labels);
    if (labels !== this.entropyLabels && t.labels.length) {
      this.entropy?.destroy();
      this.entropy = new LineChart(this.entropyGrid, {name: "attention_entropy", title: "Attention entropy per head",
        yLabel: "nats", series: [...t.labels.map((label) => ({label})), {label: "uniform", style: {dash: [2, 6], stroke: "#777"}}]});
      this.entropyLabels = labels;
    }
    this.entropy?.setData(x, [...t.values, t.uniform]);
  }

  async loadMaps(epoch) {
    this.fetchedAt = Date.now();
    this.fetchedEpoch = epoch;
    try {
      this.maps = await request(`jobs/${encodeURIComponent(this.job.id)}/attention`, {signal: this.page.signal});
    } catch (e) {
      if (e.name === "AbortError") return;
      fill(this.mapNote, e.status === 409 ? "The attention map appears with the job's first checkpoint." : `${e.status || ""} ${e.message}`);
      return;
    }
    const layer = this.layerSelect.value, head = this.headSelect.value;
    fill(this.layerSelect, this.maps.layers.map((l) => h("option", {value: l.key}, l.key)));
    if (layer && this.maps.layers.some((l) => l.key === layer)) this.layerSelect.value = layer;
    const heads = this.maps.layers[0] ? this.maps.layers[0].heads.length : 0;
    fill(this.headSelect, Array.from({length: heads}, (_, i) => h("option", {value: String(i)}, String(i))));
    if (head && Number(head) < heads) this.headSelect.value = head;
    this.drawMap();
  }

  drawMap() {
    const m = this.maps;
    if (!m) return;
    const layer = m.layers.find((l) => l.key === this.layerSelect.value) || m.layers[0];
    const head = Number(this.headSelect.value || 0);
    if (!layer) return;
    const tokens = m.tokens.map(shown);
    this.heatmap.rowHeight = tokens.length <= 32 ? 16 : 9;
    this.heatmap.setData(tokens, tokens, layer.heads[head]);
    this.mapBox.dataset.entropy = String(layer.entropy[head]);
    fill(this.mapNote, `${m.source === "weights" ? "The trained weights" : "The latest checkpoint"}` +
      `${m.epoch !== null ? ` (epoch ${m.epoch})` : ""}, on the first ${m.tokens.length} tokens of the ` +
      `${m.sample === "validation" ? "validation text" : "text sent"}. ${layer.key} head ${head}: entropy ` +
      `${num(layer.entropy[head])} nats.`);
  }

  destroy() {
    this.perplexity?.destroy();
    this.blocks?.destroy();
    this.entropy?.destroy();
    this.heatmap?.destroy();
  }
}

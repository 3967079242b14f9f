// The key's datasets: shape, task (and why, when inferred), classes, size.
import {request} from "../api.js";
import {bytes, fill, h, notice, shortId, table, when} from "../dom.js";

export const NAME = "datasets";
const PAGE_SIZE = 100;

export async function render(main, page) {
  const list = await request("datasets", {signal: page.signal, params: {limit: PAGE_SIZE}});
  fill(main, h("h1", {}, "Datasets"),
       list.items.length ? datasetsTable(list) : notice("No datasets yet: upload one with `chainrule datasets upload FILE` or POST /v1/datasets."),
       list.total > list.items.length ? h("p", {class: "hint"}, `Showing the newest ${list.items.length} of ${list.total}.`) : null);
  page.ready();
}

function datasetsTable(list) {
  const rows = list.items.map((d) => h("tr", {dataset: {dataset: d.id}},
    h("td", {}, d.name, h("div", {class: "mono hint"}, shortId(d.id))),
    h("td", {}, d.task, d.task_reason ? h("div", {class: "hint"}, d.task_inferred ? `inferred: ${d.task_reason}` : d.task_reason) : null),
    h("td", {class: "num"}, d.n_rows.toLocaleString()),
    h("td", {class: "mono"}, `[${d.input_shape.join(", ")}]`),
    h("td", {}, d.classes ? `${d.classes.length}: ${d.classes.slice(0, 10).join(", ")}${d.classes.length > 10 ? ", …" : ""}` : `${d.n_outputs} output(s)`),
    h("td", {}, d.format, d.target ? h("div", {class: "hint"}, `target: ${d.target}`) : null),
    h("td", {class: "num"}, bytes(d.size_bytes)),
    h("td", {}, when(d.created_at))));
  return table(["name", "task", "rows", "input shape", "classes / outputs", "format", "size", "created"], rows, {id: "datasets-table"});
}

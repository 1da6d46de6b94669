// The points browser: points by id, or page by page through a range of integer ids (the API looks points up by
// id; it has no scan). Each point shows its text, payload and the model version that embedded it.

import { collectionPath, get, post } from "../api.js";
import { field, fill, h, idText, json, num, parseIds, table } from "../dom.js";
import { confirmAction, nav, showInfo, writeButton } from "../ui.js";
import { collectionHeader } from "./tabs.js";

const PAGE_SIZES = [10, 20, 50, 100];

export async function render(main, name, query) {
  const info = await get(collectionPath(name));
  const base = `#/collections/${encodeURIComponent(name)}/points`;
  const ids = query.get("ids");
  const from = Number.parseInt(query.get("from") ?? "0", 10) || 0;
  const size = PAGE_SIZES.includes(Number(query.get("size"))) ? Number(query.get("size")) : 20;

  const idsInput = h("input", { name: "ids", value: ids ?? "", placeholder: '7, 12, doc-a, "42" (quoted: a string id)', autocomplete: "off" });
  const byId = h("form", { class: "panel" },
    h("div", { class: "fields" }, field("Point ids, comma-separated", idsInput, { wide: true }), h("button", { type: "submit" }, "Look up")));
  byId.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `${base}?ids=${encodeURIComponent(idsInput.value)}`;
  });
  const fromInput = h("input", { name: "from", type: "number", value: from });
  const sizeInput = h("select", { name: "size" }, PAGE_SIZES.map((n) => h("option", { value: n, selected: n === size }, String(n))));
  const byRange = h("form", { class: "panel" },
    h("div", { class: "fields" }, field("Integer ids from", fromInput), field("Page size", sizeInput), h("button", { type: "submit" }, "Show page")));
  byRange.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `${base}?from=${Number.parseInt(fromInput.value, 10) || 0}&size=${sizeInput.value}`;
  });

  const wanted = ids !== null ? parseIds(ids) : Array.from({ length: size }, (_, i) => from + i);
  const found = wanted.length ? await post(`${collectionPath(name)}/points/lookup`, { ids: wanted }) : { points: [], missing: [] };
  const rows = found.points.map((p) => [
    String(p.id),
    p.text ? h("details", {}, h("summary", {}, p.text.length > 90 ? `${p.text.slice(0, 90)}…` : p.text), p.text) : "—",
    p.payload ? json(p.payload) : "—",
    `v${p.model_version}`,
    writeButton("Delete", async () => {
      if (!(await confirmAction(`Delete point ${p.id}?`, `Point ${p.id} is removed from ${name}.`, "Delete"))) return;
      const ack = await post(`${collectionPath(name)}/points/delete`, { ids: [p.id] });
      showInfo(`Deleted ${ack.count} point (operation ${ack.operation_id}).`);
      nav.reload();
    }, { danger: true }),
  ]);
  const pager = ids === null ? h("nav", { class: "actions", "aria-label": "Pages" },
    from > 0 ? h("a", { href: `${base}?from=${Math.max(from - size, 0)}&size=${size}` }, "← Previous page") : null,
    h("span", { class: "muted" }, `ids ${from}–${from + size - 1}`),
    h("a", { href: `${base}?from=${from + size}&size=${size}` }, "Next page →")) : null;

  fill(main, 
    ...collectionHeader(name, "/points", "Points"),
    h("p", { class: "muted" }, `${num(info.points)} points in all.`),
    h("div", { class: "cards" }, byId, byRange),
    pager,
    rows.length ? table(["Id", "Text", "Payload", "Model", ""], rows) : h("p", { class: "muted" }, "No point with these ids."),
    found.missing.length ? h("p", { class: "muted" }, `Not found: ${found.missing.map(idText).join(", ")}`) : null,
    pager?.cloneNode(true));
}


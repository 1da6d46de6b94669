// The points browser: points by id, or page by page through every point in storage order (the API's scroll,
// whatever the ids are). Each point shows its text, payload and the model version that embedded it.

import { collectionPath, get, post } from "../api.js";
import { field, fill, h, idText, json, num, parseIds, table } from "../dom.js";
import { confirmAction, nav, showInfo, writeButton } from "../ui.js";
import { collectionHeader } from "./tabs.js";

const PAGE_SIZES = [10, 20, 50, 100];

export async function render(main, name, query) {
  const info = await get(collectionPath(name));
  const base = `#/collections/${encodeURIComponent(name)}/points`;
  const ids = query.get("ids");
  const after = query.get("after");
  const size = PAGE_SIZES.includes(Number(query.get("size"))) ? Number(query.get("size")) : 20;

  const idsInput = h("input", { name: "ids", value: ids ?? "", placeholder: '7, 12, doc-a, "42" (quoted: a string id)', autocomplete: "off" });
  const byId = h("form", { class: "panel" },
    h("div", { class: "fields" }, field("Point ids, comma-separated", idsInput, { wide: true }), h("button", { type: "submit" }, "Look up")));
  byId.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `${base}?ids=${encodeURIComponent(idsInput.value)}`;
  });
  const sizeInput = h("select", { name: "size" }, PAGE_SIZES.map((n) => h("option", { value: n, selected: n === size }, String(n))));
  const byPage = h("form", { class: "panel" },
    h("div", { class: "fields" }, field("Page size", sizeInput), h("button", { type: "submit" }, "Browse from the start")));
  byPage.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `${base}?size=${sizeInput.value}`;
  });

  let found = { points: [], missing: [] };
  let nextOffset = null;
  if (ids !== null) {
    const wanted = parseIds(ids);
    if (wanted.length) found = await post(`${collectionPath(name)}/points/lookup`, { ids: wanted });
  } else {
    const page = await post(`${collectionPath(name)}/points/scroll`, { limit: size, ...(after !== null ? { offset: Number(after) } : {}) });
    found = { points: page.points, missing: [] };
    nextOffset = page.next_offset;
  }
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
    after !== null ? h("a", { href: `${base}?size=${size}` }, "← First page") : null,
    h("span", { class: "muted" }, `${found.points.length} points on this page`),
    nextOffset !== null ? h("a", { href: `${base}?after=${nextOffset}&size=${size}` }, "Next page →") : null) : null;

  fill(main, 
    ...collectionHeader(name, "/points", "Points"),
    h("p", { class: "muted" }, `${num(info.points)} points in all.`),
    h("div", { class: "cards" }, byId, byPage),
    pager,
    rows.length ? table(["Id", "Text", "Payload", "Model", ""], rows) : h("p", { class: "muted" }, ids !== null ? "No point with these ids." : "No points."),
    found.missing.length ? h("p", { class: "muted" }, `Not found: ${found.missing.map(idText).join(", ")}`) : null,
    pager?.cloneNode(true));
}


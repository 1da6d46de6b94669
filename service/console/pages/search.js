// A collection's search box: text or a vector, k, a filter, score and relevance floors, search params; the hits
// with their scores, calibrated relevance and payloads.

import { collectionPath, get, post } from "../api.js";
import { field, fill, h, idText, json, parseJson, score, table } from "../dom.js";
import { attempt } from "../ui.js";
import { collectionHeader } from "./tabs.js";

export async function render(main, name, query) {
  const info = await get(collectionPath(name));
  const kind = h("select", { name: "kind" },
    [["text", "text"], ["vector", "vector (JSON array)"], ["vectors", "token vectors (JSON array of arrays)"]].map(([v, t]) => h("option", { value: v }, t)));
  const input = h("textarea", { name: "q", required: true, rows: 2, placeholder: info.model ? "what are you looking for?" : `[${info.dim} numbers]` }, query.get("q") ?? "");
  if (!info.model) kind.value = info.multivector ? "vectors" : "vector";
  const k = h("input", { name: "k", type: "number", min: 1, max: 1000, value: 10 });
  const filter = h("textarea", { name: "filter", rows: 2, placeholder: '{"must": [{"key": "lang", "match": "en"}]}' });
  const minScore = h("input", { name: "min_score", type: "number", step: "any" });
  const minRelevance = h("input", { name: "min_relevance", type: "number", step: "any", min: 0, max: 1, disabled: !info.relevance });
  const exact = h("input", { name: "exact", type: "checkbox" });
  const oversample = h("input", { name: "oversample", type: "number", step: "any", min: 1 });
  const results = h("section", { id: "results", "aria-live": "polite" });
  const form = h("form", { class: "panel", role: "search" },
    h("div", { class: "fields" },
      field("Query", input, { wide: true }), field("Query by", kind), field("k", k),
      field("Min score", minScore), field(info.relevance ? "Min relevance (0..1)" : "Min relevance (no calibrator fitted)", minRelevance),
      field("Oversample", oversample), field("Exact search", exact, { check: true }),
      field("Filter (JSON)", filter, { wide: true })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Search")));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { // Enter searches; Shift+Enter starts a new line
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      const body = { k: Number(k.value) || 10, with_payload: true };
      if (info.relevance && !info.relevance.stale) body.with_relevance = true; // relevance is answered only when asked
      if (kind.value === "text") body.text = input.value;
      else body[kind.value] = parseJson(input.value, "The query vector");
      if (filter.value.trim()) body.filter = parseJson(filter.value, "The filter");
      if (minScore.value !== "") body.min_score = Number(minScore.value);
      if (minRelevance.value !== "") body.min_relevance = Number(minRelevance.value);
      const params = {};
      if (exact.checked) params.exact = true;
      if (oversample.value !== "") params.oversample = Number(oversample.value);
      if (Object.keys(params).length) body.params = params;
      const answer = await post(`${collectionPath(name)}/query`, body);
      results.replaceChildren(hits(name, answer));
    });
  });
  fill(main, ...collectionHeader(name, "/search", "Search"), form, results);
  if (input.value) form.requestSubmit();
}

function hits(name, answer) {
  const rows = answer.results.map((hit, i) => [
    String(i + 1),
    h("a", { href: `#/collections/${encodeURIComponent(name)}/points?ids=${encodeURIComponent(idText(hit.id))}` }, String(hit.id)),
    score(hit.score, 4),
    hit.relevance === undefined ? "—" : score(hit.relevance),
    hit.payload ? json(hit.payload) : "—",
  ]);
  return h("div", {},
    h("h2", {}, `${answer.results.length} hits`, h("span", { class: "muted" }, ` in ${answer.took_ms.toFixed(1)} ms`)),
    rows.length ? table(["#", "Id", "Score", "Relevance", "Payload"], rows, { numeric: [0, 2, 3] }) : h("p", { class: "muted" }, "Nothing matched."));
}

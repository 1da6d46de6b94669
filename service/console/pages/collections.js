// The collections list (with a form to create one) and one collection's overview: models, index, compression,
// memory by stage, segments, and a form to build from a file as a job.

import { collectionPath, del, get, post } from "../api.js";
import { bytes, facts, field, fill, h, json, num, score, table, when } from "../dom.js";
import { attempt, confirmAction, showInfo, watchJob, writeButton } from "../ui.js";
import { collectionHeader } from "./tabs.js";

const link = (name) => h("a", { href: `#/collections/${encodeURIComponent(name)}` }, name);

function compressionSummary(c) {
  if (!c) return "none";
  const parts = ["matryoshka", "leanvec", "quantizer"].filter((k) => c[k]).map((k) => `${k} ${JSON.stringify(c[k])}`);
  return `${c.state}${parts.length ? ": " + parts.join(", ") : ""}`;
}

function indexSummary(index) {
  const params = index.type === "hnsw" ? ` (m ${index.m}, ef_construction ${index.ef_construction}, ef_search ${index.ef_search})` : "";
  return `${index.type}${params}${index.device ? ` on ${index.device.toUpperCase()}` : ""}`;
}

export async function list(main) {
  const [{ collections }, { models }] = await Promise.all([get("/v1/collections"), get("/v1/models")]);
  const rows = collections.map((c) => [
    link(c.name), num(c.points), c.model ?? "vectors only",
    c.models.map((m) => `v${m.version}${m.serving ? " (serving)" : ""}`).join(", "),
    num(c.dim), c.metric, c.multivector ? "multivector (MUVERA)" : c.index.type, compressionSummary(c.compression), bytes(c.memory_bytes),
  ]);
  fill(main, 
    h("h1", { tabindex: -1 }, "Collections"),
    collections.length
      ? table(["Name", "Points", "Model", "Versions", "Dim", "Metric", "Index", "Compression", "Memory"], rows, { numeric: [1, 4, 8] })
      : h("p", { class: "muted" }, "No collections yet."),
    createForm(models));
}

function createForm(models) {
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,62}", autocomplete: "off" });
  const model = h("select", { name: "model" }, models.map((m) => h("option", { value: m.name }, `${m.name} (${m.dim}-d, ${m.kind})`)));
  const metric = h("select", { name: "metric" }, ["cosine", "ip", "l2"].map((m) => h("option", {}, m)));
  const index = h("select", { name: "index" }, ["flat", "hnsw"].map((m) => h("option", {}, m)));
  const form = h("form", { class: "panel", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "Create a collection"),
    h("div", { class: "fields" }, field("Name", name), field("Model", model), field("Metric", metric), field("Index", index),
      writeButton("Create", null, { type: "submit" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await attempt(async () => {
      await post("/v1/collections", { name: name.value, model: model.value, metric: metric.value, index: { type: index.value } });
      location.hash = `#/collections/${encodeURIComponent(name.value)}`;
    });
  });
  return form;
}

export async function overview(main, name) {
  const c = await get(collectionPath(name));
  const stageRows = c.stages.map((s) => [s.name, num(s.bytes_per_vector), s.recall_at_10 === undefined ? "—" : score(s.recall_at_10), bytes(s.bytes_per_vector * c.points)]);
  const segmentRows = c.segments.map((s) => [h("code", {}, s.id), s.state, s.index, num(s.points), num(s.dead), bytes(s.memory_bytes)]);
  const jobSlot = h("div", { "aria-live": "polite" });
  fill(main, 
    ...collectionHeader(name, ""),
    h("div", { class: "cards" },
      h("section", { class: "panel" }, h("h2", {}, "Summary"), facts([
        ["Points", num(c.points)],
        ["Serving model", `${c.model ?? "vectors only"} (v${c.models.find((m) => m.serving)?.version ?? "?"})`],
        ["Dimension", num(c.dim)],
        ["Metric", c.metric],
        ["Index", c.multivector ? `MUVERA FDE ${JSON.stringify(c.muvera)}` : indexSummary(c.index)],
        ["Compression", compressionSummary(c.compression)],
        ["Memory", bytes(c.memory_bytes)],
        ["Dead rows", num(c.dead_rows)],
        ["Last operation", num(c.operation_id)],
        ["Relevance", c.relevance ? `${c.relevance.calibrator}, threshold ${num(c.relevance.threshold)}${c.relevance.stale ? " (stale: fitted for another model version)" : ""}` : "not fitted"],
        ["Created", when(c.created_at)],
      ])),
      h("section", { class: "panel" }, h("h2", {}, "Model versions"),
        table(["Version", "Model", "Dim", "Serving"], c.models.map((m) => [`v${m.version}`, m.name ?? "vectors only", num(m.dim), m.serving ? "yes" : "no"]), { numeric: [2] }))),
    h("h2", {}, "Memory by stage"),
    table(["Stage", "Bytes / vector", "Recall@10", "For all points"], stageRows, { numeric: [1, 2, 3] }),
    h("h2", {}, "Segments"),
    segmentRows.length ? table(["Id", "State", "Index", "Points", "Dead", "Memory"], segmentRows, { numeric: [3, 4, 5] }) : h("p", { class: "muted" }, "No segments yet."),
    buildForm(name, jobSlot),
    jobSlot,
    h("section", { class: "panel" }, h("h2", {}, "Raw info"), h("details", {}, h("summary", {}, "JSON"), json(c))),
    h("div", { class: "actions" }, writeButton("Delete collection", async () => {
      if (!(await confirmAction(`Delete ${name}?`, `All ${c.points} points of ${name}, its segments and its model versions are removed for good.`, "Delete"))) return;
      await del(collectionPath(name));
      showInfo(`Deleted collection ${name}.`);
      location.hash = "#/collections";
    }, { danger: true })));
}

function buildForm(name, jobSlot) {
  const path = h("input", { name: "path", required: true, placeholder: "docs.jsonl", autocomplete: "off" });
  const format = h("select", { name: "format" }, ["jsonl", "parquet", "npy"].map((f) => h("option", {}, f)));
  const onError = h("select", { name: "on_error" }, [["fail", "stop at the first bad row"], ["skip", "skip bad rows"]].map(([v, t]) => h("option", { value: v }, t)));
  const form = h("form", { class: "panel", "aria-labelledby": "build-title" },
    h("h2", { id: "build-title" }, "Build from a file"),
    h("p", { class: "muted" }, "Reads a file from the server's imports folder (<data_dir>/imports or TROVE_BUILD_SOURCE_DIRS) as a job."),
    h("div", { class: "fields" }, field("File", path), field("Format", format), field("Bad rows", onError), writeButton("Start build", null, { type: "submit" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await attempt(async () => {
      const { job_id } = await post(`${collectionPath(name)}/builds`, { source: { path: path.value, format: format.value }, on_error: onError.value });
      watchJob(job_id, jobSlot, (job) => {
        if (job.state === "succeeded") showInfo(`Build finished: ${JSON.stringify(job.result)}`);
      });
    });
  });
  return form;
}

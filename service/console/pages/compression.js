// Compression: the configured pipeline, whether it is fitted, and each search stage's bytes per vector beside
// its recall@10 (measured at fit time on held-out queries) as charts; a form to fit a new config as a job.

import { collectionPath, get, put } from "../api.js";
import { bytes, facts, field, fill, h, json, num, parseJson, percent, score, table } from "../dom.js";
import { attempt, reloadOnSuccess, watchJob, writeButton } from "../ui.js";
import { barChart } from "../charts.js";
import { collectionHeader } from "./tabs.js";

const CONFIG_KEYS = ["matryoshka", "leanvec", "quantizer", "rerank"];

export async function render(main, name) {
  const [{ compression, stages }, info] = await Promise.all([get(`${collectionPath(name)}/compression`), get(collectionPath(name))]);
  const names = stages.map((s) => s.name);
  const config = compression ? Object.fromEntries(CONFIG_KEYS.filter((k) => compression[k]).map((k) => [k, compression[k]])) : { quantizer: { kind: "int8" } };
  const editor = h("textarea", { name: "config", rows: 6 }, JSON.stringify(config, null, 2));
  const jobSlot = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "panel", "aria-labelledby": "fit-title" },
    h("h2", { id: "fit-title" }, "Fit compression"),
    h("p", { class: "muted" }, "Fitted on the stored vectors as a job; searches go on meanwhile. Keys: matryoshka, leanvec, quantizer, rerank (see DESIGN.md)."),
    h("div", { class: "fields" }, field("Config (JSON)", editor, { wide: true })),
    h("div", { class: "actions" }, writeButton("Fit compression", null, { type: "submit" })));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      const { job_id } = await put(`${collectionPath(name)}/compression`, parseJson(editor.value, "The config"));
      watchJob(job_id, jobSlot, reloadOnSuccess("Compression fitted."));
    });
  });
  fill(main, 
    ...collectionHeader(name, "/compression", "Compression"),
    compression ? facts([
      ["State", compression.state],
      ["Search", compression.search],
      ["Fitted on", compression.points === undefined ? undefined : `${num(compression.points)} points, ${num(compression.queries)} queries`],
      ["Index memory", compression.ram_bytes === undefined ? undefined : `${bytes(compression.ram_bytes)} in RAM, ${bytes(compression.disk_bytes)} on disk (${compression.device})`],
    ]) : h("p", { class: "muted" }, "No compression: vectors are searched as float32."),
    h("div", { class: "cards" },
      barChart({
        caption: "Bytes per vector, by stage",
        series: names,
        groups: [{ label: "", bars: stages.map((s) => ({ name: s.name, value: s.bytes_per_vector })) }],
        format: (v) => `${num(v)} B`,
        note: `float32 at ${info.dim} dimensions is ${num(4 * info.dim)} B.`,
      }),
      barChart({
        caption: "Recall@10 of each stage against exact float search",
        series: names,
        groups: [{ label: "", bars: stages.map((s) => ({ name: s.name, value: s.recall_at_10 })) }],
        format: percent,
        max: 1,
        note: stages.some((s) => s.recall_at_10 !== undefined) ? "Measured when the compression was fitted." : "Measured by a fit: none yet.",
      })),
    table(["Stage", "Bytes / vector", "Storage", "Recall@10"], stages.map((s) => [s.name, num(s.bytes_per_vector), s.storage ?? "—", s.recall_at_10 === undefined ? "—" : score(s.recall_at_10)]), { numeric: [1, 3] }),
    form, jobSlot,
    compression ? h("details", {}, h("summary", {}, "Raw compression info"), json(compression)) : null);
}

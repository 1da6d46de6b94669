// Relevance: the serving model's calibration report (threshold, PR-AUC, precision at 95% recall, what the
// threshold filters) beside its baselines as a chart; forms to fit from labelled queries or refit as a job.

import { collectionPath, get, post } from "../api.js";
import { facts, field, fill, h, json, percent, score, table } from "../dom.js";
import { attempt, reloadOnSuccess, watchJob, writeButton } from "../ui.js";
import { barChart } from "../charts.js";
import { collectionHeader } from "./tabs.js";

const METRICS = [["pr_auc", "PR-AUC"], ["p_at_r95", "Precision at 95% recall"], ["precision", "Precision kept"], ["recall", "Recall kept"], ["filtered_fraction", "Share filtered out"]];

export async function render(main, name) {
  const [{ relevance: report }, info] = await Promise.all([get(`${collectionPath(name)}/relevance`), get(collectionPath(name))]);
  const jobSlot = h("div", { "aria-live": "polite" });
  fill(main, ...collectionHeader(name, "/relevance", "Relevance"),
    report ? reportView(report) : h("p", { class: "muted" },
      info.relevance?.stale ? info.relevance.message : "No relevance calibrator is fitted for the serving model."),
    fitForm(name, jobSlot), jobSlot);
}

function reportView(r) {
  const methods = [[r.calibrator, r], ...Object.entries(r.baselines)];
  const series = methods.map(([m]) => m);
  return h("div", {},
    h("div", { class: "cards" },
      h("section", { class: "panel" }, h("h2", {}, `Calibrator: ${r.calibrator}`), facts([
        ["Threshold", score(r.threshold, 4)],
        ["PR-AUC", score(r.pr_auc)],
        ["Precision at 95% recall", score(r.p_at_r95)],
        ["Precision / recall kept", `${percent(r.precision)} / ${percent(r.recall)}`],
        ["Filtered out", percent(r.filtered_fraction)],
        ["Queries left empty", percent(r.empty_result_rate)],
        ["Calibration error (ECE)", score(r.ece)],
        ["Labelled queries", r.queries ? `${r.queries.train} train, ${r.queries.validation} validation, ${r.queries.test} test` : undefined],
        ["Model version", r.model_version === undefined ? undefined : `v${r.model_version}`],
      ])),
      barChart({
        caption: "The calibrator against its baselines (test queries)",
        series,
        groups: METRICS.map(([key, label]) => ({ label, bars: methods.map(([m, values]) => ({ name: m, value: values[key] })) })),
        format: (v) => score(v),
        max: 1,
      })),
    h("h2", {}, "Baselines"),
    table(["Method", ...METRICS.map(([, label]) => label)], methods.map(([m, v]) => [m, ...METRICS.map(([key]) => score(v[key]))]), { numeric: [1, 2, 3, 4, 5] }),
    h("details", {}, h("summary", {}, "Raw report"), json(r)));
}

function fitForm(name, jobSlot) {
  const path = h("input", { name: "path", placeholder: "labels.jsonl", autocomplete: "off" });
  const calibrator = h("select", { name: "calibrator" }, ["cosine_adapter", "platt", "isotonic", "identity"].map((c) => h("option", {}, c)));
  const start = (body) => attempt(async () => {
    const { job_id } = await post(`${collectionPath(name)}/relevance`, { calibrator: calibrator.value, ...body });
    watchJob(job_id, jobSlot, reloadOnSuccess("Relevance calibrator fitted."));
  });
  const form = h("form", { class: "panel", "aria-labelledby": "relevance-fit-title" },
    h("h2", { id: "relevance-fit-title" }, "Fit a calibrator"),
    h("p", { class: "muted" }, "From a JSONL file of {\"query\", \"relevant\": [ids]} in the imports folder, or again from the stored examples."),
    h("div", { class: "fields" }, field("Labelled queries file", path), field("Calibrator", calibrator)),
    h("div", { class: "actions" },
      writeButton("Fit from file", null, { type: "submit" }),
      writeButton("Refit from stored examples", () => start({ refit: true }), { secondary: true })));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start({ path: path.value });
  });
  return form;
}

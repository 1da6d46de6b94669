// Upgrades: each fitted upgrade's compatibility report beside the version serving now (m_old_old, m_new_old,
// m_new_new, gap recovered, whether the criterion holds), with promote, roll back, backfill and rebuild behind a
// confirmation; and a form to fit an upgrade to another model as a job.

import { collectionPath, get, post } from "../api.js";
import { duration, facts, field, fill, h, json, num, percent, score, table, when } from "../dom.js";
import { attempt, confirmAction, nav, reloadOnSuccess, showInfo, watchJob, writeButton } from "../ui.js";
import { barChart } from "../charts.js";
import { collectionHeader } from "./tabs.js";

const SERIES = ["serving model (m_old_old)", "new queries, old index (m_new_old)", "new model re-embedded (m_new_new)"];

export async function render(main, name) {
  const [info, { upgrades }, { models }] = await Promise.all([get(collectionPath(name)), get(`${collectionPath(name)}/upgrades`), get("/v1/models")]);
  const serving = info.models.find((m) => m.serving);
  const jobSlot = h("div", { "aria-live": "polite" });
  const cards = [...upgrades].reverse().map((u) => upgradeCard(name, u, serving, jobSlot));
  fill(main, 
    ...collectionHeader(name, "/upgrades", "Upgrades"),
    h("section", { class: "panel", id: "serving" }, h("h2", {}, "Serving now"), facts([
      ["Version", `v${serving.version}`],
      ["Model", serving.name ?? "vectors only"],
      ["Dimension", num(serving.dim)],
      ["Index dimension", num(info.dim)],
      ["All versions", info.models.map((m) => `v${m.version} ${m.name ?? "vectors"}${m.serving ? " (serving)" : ""}`).join(", ")],
    ])),
    jobSlot,
    cards.length ? cards : h("p", { class: "muted" }, "No upgrades fitted yet."),
    startForm(name, models, serving, jobSlot));
}

function isServing(u, serving) {
  return u.state === "promoted" && u.version === serving.version;
}

function upgradeCard(name, u, serving, jobSlot) {
  const r = u.report ?? {};
  const path = `${collectionPath(name)}/upgrades/${encodeURIComponent(u.id)}`;
  const servingNow = isServing(u, serving);
  // Promote answers the record (query side) or a job (reproject); backfill always a job.
  const done = (message) => (result) => {
    if (result?.job_id) watchJob(result.job_id, jobSlot, reloadOnSuccess(message));
    else {
      showInfo(message);
      nav.reload();
    }
  };
  const promote = async () => {
    const warning = r.criterion_holds ? "The compatibility criterion holds." : "The compatibility criterion does NOT hold: results may get worse. Promote anyway?";
    const how = u.mode === "reproject" ? "The stored vectors are mapped into the new model's space as a job." : "Queries switch to the new model at once, mapped into the served index.";
    if (!(await confirmAction(`Promote ${u.model}?`, `${warning} ${how}`, "Promote"))) return;
    done(`Promoted ${u.model}.`)(await post(`${path}/promote`, { force: !r.criterion_holds }));
  };
  const rollback = async () => {
    if (!(await confirmAction(`Roll back ${u.model}?`, `The collection serves model version v${u.previous_version ?? u.from_version} again.`, "Roll back"))) return;
    done(`Rolled back ${u.model}.`)(await post(`${path}/rollback`));
  };
  const backfill = async () => {
    if (!(await confirmAction("Backfill older points?", `Points embedded by older model versions are re-encoded with ${u.model} as a job (estimated ${duration(r.reembed_estimate_seconds)}).`, "Backfill"))) return;
    done("Backfill finished.")(await post(`${path}/backfill`));
  };
  const rebuild = async () => {
    if (!(await confirmAction("Rebuild the index natively?", `After a complete backfill: every stored text is re-embedded with ${u.model}, with no map, into a new index built beside the serving one, as a job; queries and writes go on. The older model versions cannot serve afterwards.`, "Rebuild"))) return;
    done("Rebuild finished.")(await post(`${path}/rebuild`));
  };
  const holds = r.criterion_holds;
  return h("article", { class: "panel", "data-upgrade": u.id, "data-state": u.state },
    h("h2", {}, `${u.model} `, h("span", { class: `state state-${u.state}` }, servingNow ? "serving" : u.state.replace("_", " "))),
    h("div", { class: "cards" },
      h("div", {}, facts([
        ["Upgrade", h("code", {}, u.id)],
        ["From", `v${u.from_version}${u.version ? ` to v${u.version}` : ""}`],
        ["Method / mode", `${u.method} / ${u.mode}`],
        ["Fitted", when(u.created_at)],
        ["Criterion", holds === undefined ? "—" : h("span", { class: holds ? "ok" : "bad" }, holds ? `holds (${r.criterion_metric})` : `fails (${r.criterion_metric})`)],
        ["Gap recovered", r.gap_recovered === null || r.gap_recovered === undefined ? "—" : percent(r.gap_recovered)],
        ["Fit took", duration(r.fit_seconds)],
        ["Re-embedding all would take", duration(r.reembed_estimate_seconds)],
      ]),
      table(["", "Score"], [
        [SERIES[0], score(r.m_old_old)],
        [SERIES[1], score(r.m_new_old)],
        [SERIES[2], score(r.m_new_new)],
      ], { numeric: [1] })),
      barChart({
        caption: `${r.criterion_metric ?? "criterion"}: serving version beside the upgrade`,
        series: SERIES,
        groups: [{ label: "", bars: [[SERIES[0], r.m_old_old], [SERIES[1], r.m_new_old], [SERIES[2], r.m_new_new]].map(([n, v]) => ({ name: n, value: v })) }],
        format: (v) => score(v),
        max: 1,
        note: "The upgrade is worth promoting when new queries against the old index beat the serving model.",
      })),
    h("div", { class: "actions" },
      writeButton("Promote", promote, { enabled: !servingNow }),
      writeButton("Roll back", rollback, { enabled: servingNow, secondary: true }),
      writeButton("Backfill", backfill, { enabled: servingNow, secondary: true }),
      writeButton("Rebuild natively", rebuild, { enabled: servingNow && u.mode === "query_side", secondary: true })),
    h("details", {}, h("summary", {}, "Full report"), json(r)));
}

function startForm(name, models, serving, jobSlot) {
  const model = h("select", { name: "model" }, models.filter((m) => m.name !== serving.name).map((m) => h("option", { value: m.name }, `${m.name} (${m.dim}-d)`)));
  const sample = h("input", { name: "sample", type: "number", min: 50, value: 5000 });
  const method = h("select", { name: "method" }, ["orthogonal", "affine", "ridge", "low_rank", "mlp", "auto"].map((m) => h("option", {}, m)));
  const mode = h("select", { name: "mode" }, [["query_side", "query side (index untouched)"], ["reproject", "reproject stored vectors on promote"]].map(([v, t]) => h("option", { value: v }, t)));
  const form = h("form", { class: "panel", "aria-labelledby": "upgrade-title" },
    h("h2", { id: "upgrade-title" }, "Fit an upgrade"),
    h("p", { class: "muted" }, "Re-embeds a sample of the stored texts with the new model and fits a map between the two spaces; nothing that serves changes."),
    h("div", { class: "fields" }, field("New model", model), field("Sample", sample), field("Method", method), field("Mode", mode),
      writeButton("Fit upgrade", null, { type: "submit", enabled: model.options.length > 0 })));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      const { job_id } = await post(`${collectionPath(name)}/upgrades`, { model: model.value, sample: Number(sample.value), method: method.value, mode: mode.value });
      watchJob(job_id, jobSlot, reloadOnSuccess(`Upgrade to ${model.value} fitted.`));
    });
  });
  return form;
}

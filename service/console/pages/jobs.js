// Jobs: builds, fits, upgrades, backfills and the optimizer's work, newest first, with live progress bars
// (polled while any is queued or running), cancel buttons and errors.

import { get } from "../api.js";
import { field, fill, h } from "../dom.js";
import { POLL_MS, isActive, jobView, showError } from "../ui.js";

const IDLE_POLL_MS = 3000; // new jobs appear without a reload

export async function render(main, query) {
  const collection = query.get("collection");
  const { collections } = await get("/v1/collections");
  const pick = h("select", { name: "collection" },
    h("option", { value: "" }, "all collections"),
    collections.map((c) => h("option", { value: c.name, selected: c.name === collection }, c.name)));
  pick.addEventListener("change", () => {
    location.hash = pick.value ? `#/jobs?collection=${encodeURIComponent(pick.value)}` : "#/jobs";
  });
  const listing = h("div", { id: "jobs", "aria-live": "polite" });
  const status = h("p", { class: "muted" });
  fill(main, h("h1", { tabindex: -1 }, "Jobs"), h("div", { class: "fields" }, field("Collection", pick)), status, listing);

  // Only the jobs that changed are redrawn, so focus and open details survive the polling.
  let shown = new Map(); // job id -> [its JSON, its element]
  const show = (jobs) => {
    const next = new Map(jobs.map((job) => {
      const text = JSON.stringify(job);
      const old = shown.get(job.id);
      return [job.id, old && old[0] === text ? old : [text, jobView(job)]];
    }));
    const sameOrder = jobs.length === shown.size && jobs.every((job, i) => [...shown.keys()][i] === job.id);
    if (sameOrder) for (const [id, [, el]] of next) { const old = shown.get(id)[1]; if (old !== el) old.replaceWith(el); }
    else listing.replaceChildren(...(jobs.length ? [...next.values()].map(([, el]) => el) : [h("p", { class: "muted" }, "No jobs yet.")]));
    shown = next;
  };

  const refresh = async () => {
    if (!listing.isConnected) return; // the user went to another page
    const path = collection ? `/v1/jobs?collection=${encodeURIComponent(collection)}` : "/v1/jobs";
    let active = false;
    try {
      const { jobs } = await get(path);
      show(jobs);
      active = jobs.some(isActive);
      status.textContent = active ? "Updating while jobs run." : `${jobs.length} jobs, none running.`;
    } catch (err) {
      showError(err);
    }
    setTimeout(refresh, active ? POLL_MS : IDLE_POLL_MS);
  };
  await refresh();
}

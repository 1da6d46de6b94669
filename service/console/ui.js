// What every page shares: the notice line, the confirmation dialog, buttons that write, and job progress.

import { del, get } from "./api.js";
import { duration, h, json, when } from "./dom.js";

// Set by the shell: renders the current page again (after an action changed what it shows).
export const nav = { reload: () => {} };

// "write", "read" or null (not known yet: the key is being checked, or was refused).
export const rights = { value: null };

export function showError(err) {
  const notice = document.getElementById("notice");
  notice.className = "";
  notice.textContent = String(err);
  notice.hidden = false;
}

export function showInfo(text) {
  const notice = document.getElementById("notice");
  notice.className = "info";
  notice.textContent = text;
  notice.hidden = false;
}

export function clearNotice() {
  const notice = document.getElementById("notice");
  notice.hidden = true;
  notice.textContent = "";
}

// Runs an action; an error it throws (an ApiError from the API, mostly) goes to the notice line.
export async function attempt(action) {
  try {
    return await action();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

export function confirmAction(title, message, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-message").textContent = message;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

// A button that changes something: disabled for a read-only key (the API would refuse it with 403 anyway).
export function writeButton(label, onClick, { danger = false, secondary = false, enabled = true, type = "button" } = {}) {
  const readOnly = rights.value !== "write";
  return h("button", {
    type,
    class: [danger && "danger", secondary && "secondary"].filter(Boolean).join(" ") || null,
    "data-write": "",
    disabled: readOnly || !enabled,
    title: readOnly ? "this API key is read-only" : null,
    onclick: onClick ? () => attempt(onClick) : null,
  }, label);
}

const ACTIVE = new Set(["queued", "running"]);
export const isActive = (job) => ACTIVE.has(job.state);

export function jobView(job, { onCancel } = {}) {
  const pct = Math.round((job.progress ?? 0) * 100);
  const counts = job.total ? `${job.done.toLocaleString("en")} / ${job.total.toLocaleString("en")}` : job.done ? job.done.toLocaleString("en") : "";
  const took = job.finished_at && job.started_at ? duration(job.finished_at - job.started_at) : null;
  return h("article", { class: "panel job", "data-job": job.id, "data-state": job.state },
    h("div", { class: "head" },
      h("strong", {}, job.kind),
      job.collection ? h("a", { href: `#/collections/${encodeURIComponent(job.collection)}` }, job.collection) : null,
      h("span", { class: `state state-${job.state}` }, job.state),
      h("span", { class: "muted" }, `started ${when(job.started_at ?? job.created_at)}`),
      took ? h("span", { class: "muted" }, `took ${took}`) : null,
      h("code", { class: "muted" }, job.id)),
    h("progress", { max: 1, value: job.progress ?? 0, "aria-label": `${job.kind} progress`, "aria-valuetext": `${pct}%` }),
    h("div", { class: "muted" }, `${pct}%`, counts ? ` (${counts})` : ""),
    job.error ? h("p", { class: "bad" }, `${job.error.code}: ${job.error.message}`) : null,
    job.result ? h("details", {}, h("summary", {}, "Result"), json(job.result)) : null,
    isActive(job) ? h("div", { class: "actions" }, writeButton("Cancel job", async () => {
      if (!(await confirmAction("Cancel this job?", `The ${job.kind} job stops at its next checkpoint and changes nothing.`, "Cancel job"))) return;
      await del(`/v1/jobs/${encodeURIComponent(job.id)}`);
      onCancel?.();
    }, { danger: true })) : null);
}

// A watchJob callback: once the job succeeded, say so and render the page again with what it changed.
export const reloadOnSuccess = (message) => (job) => {
  if (job.state === "succeeded") {
    showInfo(message);
    nav.reload();
  }
};

// Shows one job in `slot`, polled until it finishes; then onDone(job). Stops when `slot` leaves the page.
export function watchJob(jobId, slot, onDone) {
  const tick = async () => {
    if (!slot.isConnected) return;
    let job;
    try {
      job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      showError(err);
      return;
    }
    slot.replaceChildren(jobView(job, { onCancel: tick }));
    if (isActive(job)) setTimeout(tick, POLL_MS);
    else onDone?.(job);
  };
  tick();
}

export const POLL_MS = 500;

// The console's shell: the key form, what the key may do, and the hash router that renders one page at a time.

import { keyRights, storeKey, storedKey } from "./api.js";
import { fill, h } from "./dom.js";
import { clearNotice, nav, rights, showError } from "./ui.js";
import * as collections from "./pages/collections.js";
import * as compression from "./pages/compression.js";
import * as jobs from "./pages/jobs.js";
import * as points from "./pages/points.js";
import * as relevance from "./pages/relevance.js";
import * as search from "./pages/search.js";
import * as upgrades from "./pages/upgrades.js";

const ROUTES = [
  [/^\/(?:collections)?$/, "collections", collections.list],
  [/^\/collections\/([^/]+)$/, "collections", collections.overview],
  [/^\/collections\/([^/]+)\/search$/, "collections", search.render],
  [/^\/collections\/([^/]+)\/points$/, "collections", points.render],
  [/^\/collections\/([^/]+)\/compression$/, "collections", compression.render],
  [/^\/collections\/([^/]+)\/upgrades$/, "collections", upgrades.render],
  [/^\/collections\/([^/]+)\/relevance$/, "collections", relevance.render],
  [/^\/jobs$/, "jobs", jobs.render],
];

async function checkRights() {
  const out = document.getElementById("rights");
  out.className = "";
  try {
    rights.value = await keyRights();
    const keyed = Boolean(storedKey());
    out.textContent = rights.value === "read" ? "read-only key: writing is off" : keyed ? "read-write key" : "no key: this server has none configured";
    out.className = rights.value === "read" ? "read-only" : "";
  } catch (err) {
    rights.value = null;
    out.textContent = err.status === 401 ? "enter a valid API key" : "key not checked";
    showError(err);
  }
  document.body.dataset.rights = rights.value ?? "none";
}

async function render({ focus }) {
  const [path, queryString] = (location.hash.replace(/^#/, "") || "/").split("?");
  const query = new URLSearchParams(queryString ?? "");
  const main = document.getElementById("main");
  delete main.dataset.page; // set again once this page has rendered (the browser tests wait for it)
  const found = ROUTES.map(([pattern, section, page]) => [path.match(pattern), section, page]).find(([m]) => m);
  for (const link of document.querySelectorAll("header nav a")) {
    link.toggleAttribute("aria-current", false);
    if (found && link.dataset.section === found[1]) link.setAttribute("aria-current", "page");
  }
  if (!found) {
    fill(main, h("h1", { tabindex: -1 }, "No such page"), h("p", {}, h("a", { href: "#/collections" }, "Back to the collections")));
  } else {
    const [match, , page] = found;
    const params = match.slice(1).filter((p) => p !== undefined).map(decodeURIComponent);
    try {
      await page(main, ...params, query);
    } catch (err) {
      fill(main, h("h1", { tabindex: -1 }, "This page could not load"), h("p", { class: "bad" }, String(err)));
      showError(err);
    }
  }
  main.dataset.page = path;
  document.title = `${main.querySelector("h1")?.textContent ?? "Trove"} · Trove console`;
  if (focus) main.querySelector("h1")?.focus();
}

nav.reload = () => render({ focus: false });

async function start() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  input.value = storedKey();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    storeKey(input.value.trim());
    clearNotice();
    await checkRights();
    await render({ focus: false });
  });
  document.getElementById("key-forget").addEventListener("click", async () => {
    storeKey("");
    input.value = "";
    clearNotice();
    await checkRights();
    await render({ focus: false });
  });
  window.addEventListener("hashchange", () => {
    clearNotice();
    render({ focus: true });
  });
  await checkRights();
  await render({ focus: false });
  document.body.dataset.ready = "true";
}

start();

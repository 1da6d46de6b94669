// The heading and tabs of every page about one collection.

import { h } from "../dom.js";

const TABS = [
  ["", "Overview"],
  ["/search", "Search"],
  ["/points", "Points"],
  ["/compression", "Compression"],
  ["/upgrades", "Upgrades"],
  ["/relevance", "Relevance"],
];

export function collectionHeader(name, active, title) {
  const base = `#/collections/${encodeURIComponent(name)}`;
  return [
    h("p", { class: "muted" }, h("a", { href: "#/collections" }, "Collections"), " / ", name),
    h("h1", { tabindex: -1 }, title ? `${title}: ${name}` : name),
    h("nav", { class: "tabs", "aria-label": `Collection ${name}` },
      TABS.map(([suffix, label]) => h("a", { href: base + suffix, "aria-current": suffix === active ? "page" : null }, label))),
  ];
}

// Bar charts in plain HTML: every bar is a row with its label and value as text, so a chart reads the same to a
// screen reader, at phone width, and printed. Each value is scaled against the largest value of its group's scale.

import { h } from "./dom.js";

// groups: [{label, bars: [{name, value}]}]; series: the bar names in legend order (they pick the colours).
export function barChart({ caption, groups, series, format = (v) => String(v), max = null, note = null }) {
  const values = groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v) => typeof v === "number" && Number.isFinite(v));
  const top = max ?? Math.max(...values, 0);
  const colour = (name) => `s${Math.max(series.indexOf(name), 0) % 5}`;
  return h("figure", { class: "chart" },
    h("figcaption", {}, caption),
    series.length > 1 ? h("div", { class: "legend", "aria-hidden": "true" }, series.map((s) => h("span", { class: colour(s) }, s))) : null,
    groups.map((g) => h("div", { class: "group", role: "group", "aria-label": g.label },
      g.label ? h("div", { class: "group-label" }, g.label) : null,
      g.bars.map((b) => {
        const ok = typeof b.value === "number" && Number.isFinite(b.value);
        const share = ok && top > 0 ? Math.min(Math.max(b.value / top, 0), 1) : 0;
        return h("div", { class: `bar-row ${colour(b.name)}` },
          h("span", {}, b.name),
          h("span", { class: "bar-track", "aria-hidden": "true" }, ok ? h("span", { class: "bar", style: `--v: ${share}` }) : null),
          h("span", { class: "bar-value" }, ok ? format(b.value) : "—"));
      }))),
    note ? h("p", { class: "muted" }, note) : null);
}

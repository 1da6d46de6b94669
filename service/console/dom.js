// Building DOM without innerHTML (payloads and texts are user data), and the number formats the pages share.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

// Replaces an element's children, skipping the empty ones (null, false) that conditional parts leave.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function table(headers, rows, { numeric = [] } = {}) {
  const num = new Set(numeric);
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, headers.map((t, i) => h("th", { scope: "col", class: num.has(i) ? "num" : null }, t)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) => h("td", { class: num.has(i) ? "num" : null }, cell)))))));
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

export function field(label, control, { wide = false, check = false } = {}) {
  return h("label", { class: [wide && "wide", check && "check"].filter(Boolean).join(" ") || null }, check ? [control, label] : [label, control]);
}

export function json(value) {
  const flat = JSON.stringify(value);
  return h("pre", {}, flat.length <= 60 ? flat : JSON.stringify(value, null, 2));
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit && value < 10 ? 1 : 0)} ${units[unit]}`;
}

// A count: 12,345.
export function num(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  return Number.isInteger(x) ? x.toLocaleString("en") : x.toFixed(3);
}

// A measured value (score, recall, AUC) at a fixed precision, whole values too: 1.000.
export function score(x, digits = 3) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "—";
}

export function percent(x) {
  return x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`;
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

// Ids as the API takes them: a bare decimal integer is an integer id; anything else (or "quoted") a string id.
export function parseIds(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean).map((t) => {
    if (/^-?\d+$/.test(t) && Number.isSafeInteger(Number(t))) return Number(t);
    return t.replace(/^"(.*)"$/, "$1");
  });
}

// The text parseIds reads back as this id.
export function idText(id) {
  return typeof id === "string" && /^-?\d+$/.test(id) ? `"${id}"` : String(id);
}

// JSON typed into a form; a SyntaxError that says which field, for the notice line.
export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new SyntaxError(`${what} is not valid JSON (${err.message})`);
  }
}

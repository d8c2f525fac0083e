// Building the page from data without innerHTML: log lines and stacks are text, never markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const integer = new Intl.NumberFormat("en-US");
export const count = (n) => (n === null || n === undefined ? "–" : integer.format(n));
export const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(2)}%`);
export const ms = (x) => (x === null || x === undefined ? "–" : `${Math.round(x)} ms`);
export const usd = (x) => (x === null || x === undefined ? "–" : `$${x.toFixed(4)}`);
export const when = (iso) =>
  new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });

// A figure with its exact value in data-value: the text is for people, the value for tools.
export function stat(name, label, value, shown) {
  return h("div", { class: "stat", "data-stat": name, "data-value": value ?? "" },
    h("span", { class: "label" }, label), h("span", { class: "value" }, shown));
}

export function table(columns, rows, attrs = {}) {
  return h("div", { class: "table-wrap" },
    h("table", attrs,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)));
}

export const section = (title, ...children) =>
  h("section", { class: "card" }, h("h2", {}, title), ...children);

export const empty = (text) => h("p", { class: "empty" }, text);

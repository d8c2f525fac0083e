// Charts drawn as SVG by hand: a time-series line chart and a sparkline. No chart library, so
// nothing to vendor and nothing fetched from elsewhere; colours come from the stylesheet, so
// light and dark mode follow it.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  el.append(...children);
  return el;
}

const shortTime = (t, span) =>
  new Date(t).toLocaleString([], span > 2 * 86400e3
    ? { month: "short", day: "numeric" }
    : { hour: "2-digit", minute: "2-digit" });

// series: [{name, points: [[time ms, value | null], ...]}]; gaps where a value is null.
// The viewBox is about as wide as the chart is drawn (a third of a desktop, a whole phone), so
// the 11px ticks stay readable.
export function lineChart(series, { format = String, height = 190, label = "" } = {}) {
  const W = 400, H = height, left = 58, right = 10, top = 10, bottom = 22;
  const points = series.flatMap((x) => x.points).filter(([, v]) => v !== null);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  if (!points.length) return h("figure", { class: "chart" }, h("p", { class: "empty" }, "no data"));
  const xs = points.map(([t]) => t);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x0 === x1) [x0, x1] = [x0 - 1800e3, x1 + 1800e3];
  const y1 = Math.max(...points.map(([, v]) => v)) || 1;
  const x = (t) => left + ((t - x0) / (x1 - x0)) * (W - left - right);
  const y = (v) => top + (1 - v / y1) * (H - top - bottom);
  for (const f of [0, 0.5, 1]) {
    svg.append(
      s("line", { class: "grid", x1: left, x2: W - right, y1: y(f * y1), y2: y(f * y1) }),
      s("text", { class: "tick", x: left - 6, y: y(f * y1) + 4, "text-anchor": "end" },
        format(f * y1)));
  }
  svg.append(
    s("text", { class: "tick", x: left, y: H - 6 }, shortTime(x0, x1 - x0)),
    s("text", { class: "tick", x: W - right, y: H - 6, "text-anchor": "end" },
      shortTime(x1, x1 - x0)));
  series.forEach((one, i) => {
    let d = "";
    let pen = "M";
    for (const [t, v] of one.points) {
      if (v === null) { pen = "M"; continue; }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    }
    svg.append(s("path", { class: `line series-${i % 6}`, d, "data-series": one.name }));
    if (one.points.length === 1 && one.points[0][1] !== null) {
      const [t, v] = one.points[0];
      svg.append(s("circle", { class: `dot series-${i % 6}`, cx: x(t), cy: y(v), r: 3 }));
    }
  });
  const legend = h("figcaption", { class: "legend" }, series.map((one, i) =>
    h("span", {}, h("i", { class: `swatch series-${i % 6}` }), one.name)));
  return h("figure", { class: "chart" }, svg, legend);
}

export function sparkline(values, label = "trend") {
  const W = 120, H = 28;
  const peak = Math.max(1, ...values);
  const step = values.length > 1 ? W / (values.length - 1) : 0;
  const d = values.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},` +
    `${(H - 2 - (v / peak) * (H - 4)).toFixed(1)}`).join(" ");
  return s("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    s("path", { class: "line series-0", d }));
}

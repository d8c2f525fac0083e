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

const shortTime = (t, span, days) =>
  new Date(t).toLocaleString([], days || span > 2 * 86400e3
    ? { month: "short", day: "numeric", timeZone: days ? "UTC" : undefined }
    : { hour: "2-digit", minute: "2-digit" });

// series: [{name, points: [[time ms, value | null], ...]}]; gaps where a value is null.
// The viewBox is about as wide as the chart is drawn (a third of a desktop, a whole phone), so
// the 11px ticks stay readable.
// `days`: points are UTC days (API usage), labelled as dates.
export function lineChart(series, { format = String, height = 190, label = "", days = false } = {}) {
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
    s("text", { class: "tick", x: left, y: H - 6 }, shortTime(x0, x1 - x0, days)),
    s("text", { class: "tick", x: W - right, y: H - 6, "text-anchor": "end" },
      shortTime(x1, x1 - x0, days)));
  series.forEach((one, i) => {
    let d = "";
    let pen = "M";
    for (const [t, v] of one.points) {
      if (v === null) { pen = "M"; continue; }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    }
    svg.append(s("path", { class: `line series-${i % 6}`, d, "data-series": one.name }));
    // A point with no neighbour draws no line: show it as a dot.
    one.points.forEach(([t, v], j) => {
      const alone = v !== null && one.points[j - 1]?.[1] == null && one.points[j + 1]?.[1] == null;
      if (alone) svg.append(s("circle", { class: `dot series-${i % 6}`, cx: x(t), cy: y(v), r: 3 }));
    });
  });
  const legend = h("figcaption", { class: "legend" }, series.map((one, i) =>
    h("span", {}, h("i", { class: `swatch series-${i % 6}` }), one.name)));
  return h("figure", { class: "chart" }, svg, legend);
}

// Every hour of a window, so a chart's x axis is time: an hour without data is a 0 for counts
// and a gap for rates and percentiles, never a line drawn across it.
export function hours(since, until) {
  const out = [];
  for (let t = Math.floor(Date.parse(since) / 3600e3) * 3600e3; t <= Date.parse(until);
    t += 3600e3) out.push(t);
  return out;
}

// Points of one series over `slots`, from `rows` keyed by their hour; `missing` where none.
export function perHour(slots, rows, value, missing = null) {
  const byHour = new Map(rows.map((r) => [Date.parse(r.hour), r]));
  return slots.map((t) => [t, byHour.has(t) ? value(byHour.get(t)) : missing]);
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

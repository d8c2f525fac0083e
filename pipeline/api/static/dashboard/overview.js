// Overview: requests, errors and wall time over the window, per hour, the busiest scripts, and
// the operations their spans measured (d1_all, kv_get, fetch to a host...), when any were sent.

import { get } from "./api.js";
import { hours as everyHour, lineChart, perHour } from "./charts.js";
import { count, h, ms, percent, section, stat, table } from "./dom.js";

// Spans are often under a millisecond (a kv_get): two decimals below 10 ms.
const fine = (x) => (x === null || x === undefined || x >= 10 ? ms(x) : `${x.toFixed(2)} ms`);

export async function overview({ hours, script, signal }) {
  const [perf, top, ops] = await Promise.all([
    get("/api/logs/performance", { hours, script }, signal),
    get("/api/logs/scripts", { hours, limit: 10 }, signal),
    get("/api/traces/operations", { hours, script, limit: 20 }, signal),
  ]);
  const o = perf.overall;
  const figures = h("div", { class: "stats" },
    stat("requests", "Requests", o.requests, count(o.requests)),
    stat("errors", "Errors", o.errors, count(o.errors)),
    stat("error-rate", "Error rate", o.error_rate, percent(o.error_rate)),
    stat("p50", "p50 wall", o.wall_ms.p50, ms(o.wall_ms.p50)),
    stat("p95", "p95 wall", o.wall_ms.p95, ms(o.wall_ms.p95)),
    stat("p99", "p99 wall", o.wall_ms.p99, ms(o.wall_ms.p99)));
  const slots = everyHour(perf.window.since, perf.window.until);
  const series = (name, value, missing) => ({ name, points: perHour(slots, perf.hours, value,
    missing) });
  const charts = h("div", { class: "grid" },
    section("Requests per hour", lineChart([
      series("requests", (x) => x.requests, 0), series("errors", (x) => x.errors, 0),
    ], { format: (v) => count(Math.round(v)), label: "requests per hour" })),
    section("Error rate", lineChart([series("error rate", (x) => x.error_rate)],
      { format: percent, label: "error rate per hour" })),
    section("Wall time", lineChart(["p50", "p95", "p99"].map((q) =>
      series(q, (x) => x.wall_ms[q])), { format: ms, label: "wall time percentiles per hour" })));
  const rows = top.scripts.map((x) => h("tr", { "data-script": x.script },
    h("td", {}, x.script),
    h("td", { class: "num", "data-value": x.requests }, count(x.requests)),
    h("td", { class: "num" }, count(x.errors)),
    h("td", { class: "num" }, percent(x.error_rate)),
    h("td", { class: "num" }, ms(x.wall_ms.p95))));
  const operations = ops.operations.map((x) => h("tr", { "data-operation": x.operation },
    h("td", {}, x.operation),
    h("td", {}, x.script),
    h("td", { class: "num", "data-value": x.spans }, count(x.spans)),
    h("td", { class: "num" }, percent(x.error_rate)),
    ...["p50", "p95", "p99"].map((q) => h("td", { class: "num", "data-value": x.duration_ms[q] },
      fine(x.duration_ms[q])))));
  return [
    figures,
    charts,
    section("Top scripts",
      table(["Script", "Requests", "Errors", "Error rate", "p95 wall"], rows,
        { "data-table": "top-scripts" })),
    operations.length ? section("Operations (spans)",
      table(["Operation", "Script", "Spans", "Error rate", "p50", "p95", "p99"], operations,
        { "data-table": "operations" })) : null,
  ].filter((x) => x !== null);
}

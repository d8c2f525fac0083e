// A trace as a waterfall: GET /api/traces/{trace_id}, one row per span, depth first, each with
// a bar placed by its start and length on the trace's time line. Opened with the invocation
// whose trace it is, when spans of that trace are stored (`trace_spans`).

import { get } from "./api.js";
import { h, table } from "./dom.js";

const duration = (x) => (x < 1 ? `${(x * 1000).toFixed(0)} µs` : `${x.toFixed(x < 10 ? 2 : 0)} ms`);

// Placed through the CSSOM: the page's policy (style-src 'self') refuses style attributes.
function placed(el, styles) {
  Object.assign(el.style, styles);
  return el;
}

function bar(span, total) {
  // Percentages of the trace's length; a span of 0 ms still shows as a sliver.
  const left = total > 0 ? (span.offset_ms / total) * 100 : 0;
  const width = total > 0 ? Math.max((span.duration_ms / total) * 100, 0.5) : 100;
  return h("div", { class: "track" },
    placed(h("div", {
      class: `bar${span.error ? " failed" : ""}`,
      title: `${span.name}: ${duration(span.duration_ms)} from +${duration(span.offset_ms)}`,
    }), { left: `${left.toFixed(3)}%`, width: `${Math.min(width, 100 - left).toFixed(3)}%` }));
}

export async function waterfall(traceId, signal) {
  const trace = await get(`/api/traces/${encodeURIComponent(traceId)}`, {}, signal);
  const rows = trace.spans.map((span) => h("tr", {
    "data-span": span.span_id, "data-depth": span.depth, "data-error": span.error,
  },
  placed(h("td", { class: "span-name" },
    span.name, span.kind === "client" || span.kind === "server"
      ? h("span", { class: "kind" }, ` ${span.kind}`) : null),
  { paddingLeft: `${0.5 + span.depth * 1.1}rem` }),
  h("td", { class: "num nowrap", "data-value": span.duration_ms }, duration(span.duration_ms)),
  h("td", { class: "waterfall-cell" }, bar(span, trace.duration_ms))));
  return h("div", { "data-role": "trace", "data-trace": trace.trace_id },
    h("h3", {}, `Trace: ${trace.span_count} spans in ${duration(trace.duration_ms)}`),
    trace.truncated ? h("p", { class: "hint" }, "Only the earliest spans are shown.") : null,
    table(["Span", "Duration", ""], rows, { "data-table": "waterfall" }));
}

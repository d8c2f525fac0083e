// One invocation (a request, a job run, a cron trigger...) with every line and exception it
// logged, opened from any log line: GET /api/invocations/{id}. A panel, not a view of its own:
// the logs it was opened from stay where they were.

import { get } from "./api.js";
import { empty, h, ms, table, when } from "./dom.js";
import { waterfall } from "./waterfall.js";

// "GET /v1/orders/42 201" for a request; the event type for anything else.
export function requestLabel(line) {
  const r = line.request;
  if (!r) return line.event_type;
  return [r.method, r.path, r.status].filter((x) => x !== null && x !== undefined).join(" ");
}

function fact(name, label, value) {
  if (value === null || value === undefined || value === "") return null;
  return h("div", { class: "fact", "data-fact": name },
    h("dt", {}, label), h("dd", {}, String(value)));
}

export async function invocationPanel(id, signal, close) {
  const inv = await get(`/api/invocations/${encodeURIComponent(id)}`, {}, signal);
  const title = inv.method || inv.status !== null
    ? [inv.method, inv.path, inv.status].filter((x) => x !== null).join(" ")
    : inv.event_type;
  const facts = h("dl", { class: "facts" },
    fact("script", "Script", inv.script),
    fact("outcome", "Outcome", inv.outcome),
    fact("time", "Started", when(inv.ts)),
    fact("wall", "Wall time", inv.wall_ms === null ? null : ms(inv.wall_ms)),
    fact("cpu", "CPU time", inv.cpu_ms === null ? null : ms(inv.cpu_ms)),
    fact("url", "URL", inv.url),
    fact("request-id", "Request id", inv.request_id),
    fact("trace-id", "Trace id", inv.trace_id),
    fact("span-id", "Span id", inv.span_id),
    fact("version", "Version", inv.script_version),
    fact("source", "Source", inv.source));
  const lines = inv.logs.map((line) => h("tr", { "data-level": line.level, "data-seq": line.seq },
    h("td", { class: "nowrap" }, when(line.ts)),
    h("td", {}, h("span", { class: `level ${line.level}` }, line.level)),
    h("td", { class: "message" }, line.message)));
  const exceptions = inv.exceptions.map((exc) => h("div", { class: "exception" },
    h("strong", {}, exc.message),
    exc.stack ? h("pre", {}, exc.stack) : null));
  const trace = inv.trace_spans > 0 ? await waterfall(inv.trace_id, signal) : null;
  return h("section", { class: "card invocation", "data-invocation": inv.id },
    h("div", { class: "invocation-head" },
      h("h2", {}, title),
      h("button", { type: "button", class: "quiet", "data-action": "close", onclick: close },
        "Close")),
    facts,
    inv.truncated ? h("p", { class: "hint" }, "The runtime cut this invocation's logs short.")
      : null,
    inv.dropped_events ? h("p", { class: "hint", "data-role": "dropped" },
      `The runtime dropped ${inv.dropped_events} events of this invocation before they reached`
      + " tailpipe (its streaming tail's queue was full): lines and spans are missing.") : null,
    inv.complete ? null
      : h("p", { class: "hint" }, "Some lines were not found: their clock was far off."),
    lines.length ? table(["Time", "Level", "Message"], lines, { "data-table": "invocation" })
      : empty("No log lines."),
    exceptions.length ? h("div", { "data-role": "exceptions" }, h("h3", {}, "Exceptions"),
      ...exceptions) : null,
    trace);
}

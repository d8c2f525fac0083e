// A small trace and a few log records exported by the OpenTelemetry JS SDK, with its OTLP/HTTP
// JSON exporters, to a running `tailpipe collect` (tests/collector/test_otel_js.py runs it).
//
//     node otel_js_export.mjs <.local/otel-js> <collector base URL> <service.name>
//
// The token comes from TAILPIPE_OTEL_JS_TOKEN, sent as `Authorization: Bearer <token>`. The
// SDK is the pin of deploy/local/otel-js/, which `stack.py tools` (or `stack.py otel-js`)
// installs; ES module imports ignore NODE_PATH, so its packages are required from the install
// directory given. stdout is one JSON document saying exactly what the SDK was given (ids,
// names, parents, times in nanoseconds as strings, attributes, bodies) and what each export
// answered; the test compares PostgreSQL with it. A failed export exits 1.

import { createRequire } from "node:module";
import { join } from "node:path";

const [dir, base, service] = process.argv.slice(2);
const token = process.env.TAILPIPE_OTEL_JS_TOKEN;
if (!dir || !base || !service || !token) {
  console.error("usage: TAILPIPE_OTEL_JS_TOKEN=... node otel_js_export.mjs <dir> <url> <service>");
  process.exit(2);
}
const require = createRequire(join(dir, "package.json"));
const api = require("@opentelemetry/api");
const { SeverityNumber } = require("@opentelemetry/api-logs");
const { resourceFromAttributes } = require("@opentelemetry/resources");
const { BasicTracerProvider, BatchSpanProcessor } = require("@opentelemetry/sdk-trace-base");
const { LoggerProvider, BatchLogRecordProcessor } = require("@opentelemetry/sdk-logs");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-http");
const { OTLPLogExporter } = require("@opentelemetry/exporter-logs-otlp-http");
const { SpanKind, SpanStatusCode, ROOT_CONTEXT, trace } = api;

// The SDK's own warnings (a refused export, say) go to stderr, which the test shows.
api.diag.setLogger(new api.DiagConsoleLogger(), api.DiagLogLevel.WARN);

// Every export's result code (0 is SUCCESS), kept by a thin wrapper around the real exporter.
const results = { traces: [], logs: [] };
function recorded(exporter, signal) {
  return {
    export(items, done) {
      exporter.export(items, (result) => {
        results[signal].push({ code: result.code, items: items.length, error: `${result.error ?? ""}` });
        done(result);
      });
    },
    forceFlush: () => exporter.forceFlush(),
    shutdown: () => exporter.shutdown(),
  };
}

const headers = { Authorization: `Bearer ${token}` };
const resource = resourceFromAttributes({ "service.name": service, "service.version": "1.4.2" });
// Batches flushed only by forceFlush below: one request per signal, whatever the machine's speed.
const batch = { scheduledDelayMillis: 600_000, maxExportBatchSize: 512 };
const tracerProvider = new BasicTracerProvider({
  resource,
  spanProcessors: [
    new BatchSpanProcessor(
      recorded(new OTLPTraceExporter({ url: `${base}/v1/traces`, headers }), "traces"),
      batch,
    ),
  ],
});
const loggerProvider = new LoggerProvider({
  resource,
  processors: [
    // sdk-logs takes its exporter among the options; sdk-trace-base's shim, first.
    new BatchLogRecordProcessor({
      exporter: recorded(new OTLPLogExporter({ url: `${base}/v1/logs`, headers }), "logs"),
      ...batch,
    }),
  ],
});
const tracer = tracerProvider.getTracer("checkout", "0.9.0");
const logger = loggerProvider.getLogger("checkout", "0.9.0");

// Times are given, as HrTime [seconds, nanoseconds], so the summary can say them exactly: a
// minute ago on a whole second, then offsets with microseconds in them.
const t0 = Math.floor(Date.now() / 1000) - 60;
const at = (us) => [t0 + Math.floor(us / 1e6), (us % 1e6) * 1000];
const ns = (us) => (BigInt(t0) * 1_000_000_000n + BigInt(us) * 1000n).toString();

// What the SDK is given, span by span, keyed by span id; and the log records in order.
const spans = new Map();
function started(name, kind, startUs, { parent, attributes = {}, links = [] } = {}) {
  const ctx = parent ? trace.setSpan(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
  const span = tracer.startSpan(name, { kind, attributes, links, startTime: at(startUs) }, ctx);
  const { traceId, spanId } = span.spanContext();
  spans.set(spanId, {
    trace_id: traceId, span_id: spanId, parent_span_id: parent?.spanContext().spanId ?? null,
    name, kind: SpanKind[kind], start_ns: ns(startUs), attributes, events: [],
    links: links.map((l) => ({ trace_id: l.context.traceId, span_id: l.context.spanId, attributes: l.attributes })),
    status: "UNSET", status_message: null,
  });
  return span;
}
function event(span, name, us, attributes) {
  span.addEvent(name, attributes, at(us));
  spans.get(span.spanContext().spanId).events.push({ name, time_ns: ns(us), attributes });
}
function ended(span, endUs, error) {
  const given = spans.get(span.spanContext().spanId);
  if (error) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: error });
    Object.assign(given, { status: "ERROR", status_message: error });
  }
  span.end(at(endUs));
  given.end_ns = ns(endUs);
}
const logs = [];
function emit(us, severityNumber, severityText, body, attributes, span) {
  // The record's span is the context's active span: the SDK takes the ids from it.
  const context = span ? trace.setSpan(ROOT_CONTEXT, span) : ROOT_CONTEXT;
  logger.emit({ timestamp: at(us), severityNumber, severityText, body, attributes, context });
  logs.push({
    time_ns: ns(us), severity_number: severityNumber, severity_text: severityText, body,
    attributes, trace_id: span?.spanContext().traceId ?? null,
    span_id: span?.spanContext().spanId ?? null,
  });
}

// A message put on a queue, in a trace of its own: the checkout's charge links to it.
const enqueue = started("enqueue order", SpanKind.PRODUCER, 0);
ended(enqueue, 250);

// The checkout: a server span with two children, a failed charge and a call out.
const root = started("POST /checkout", SpanKind.SERVER, 1_000, {
  attributes: { "http.request.method": "POST", "cart.items": 3, "cart.total": 42.75, "cache.hit": true },
});
event(root, "cart loaded", 1_500, { "cart.items": 3, "cart.weight_kg": 1.5 });
const charge = started("charge card", SpanKind.INTERNAL, 2_125, {
  parent: root,
  attributes: { "payment.attempt": 2, "payment.amount": 42.75, "payment.retried": false },
  links: [{ context: enqueue.spanContext(), attributes: { "link.reason": "order queued" } }],
});
const call = started("GET", SpanKind.CLIENT, 9_000, {
  parent: root,
  attributes: { "server.address": "api.example.com", "http.response.status_code": 200 },
});

// Log records: two outside any span (a string body, a map body), two inside the charge.
emit(1_200, SeverityNumber.INFO, "INFO", "checkout started", { "cart.items": 3 });
emit(2_000, SeverityNumber.WARN, "WARN",
  { event: "cart.updated", items: 3, ids: ["a-1", "b-2"], total: 42.75, gift: { wrapped: true } },
  { "client.region": "eu" });
emit(3_000, SeverityNumber.DEBUG, "DEBUG", "charging card", { "payment.attempt": 2 }, charge);
emit(7_000, SeverityNumber.ERROR, "ERROR", "card declined by issuer", { "payment.code": 51 }, charge);

ended(charge, 8_000, "card declined");
ended(call, 12_345);
ended(root, 15_000);

await tracerProvider.forceFlush();
await loggerProvider.forceFlush();
await tracerProvider.shutdown();
await loggerProvider.shutdown();

const summary = { service, version: "1.4.2", spans: [...spans.values()], logs, exports: results };
console.log(JSON.stringify(summary));
const failed = [...results.traces, ...results.logs].filter((r) => r.code !== 0);
process.exit(failed.length || !results.traces.length || !results.logs.length ? 1 : 0);

// tail-stream-forwarder: a streaming Tail Worker (`tailStream`) that posts the event envelopes of
// the Workers it tails to `tailpipe collect` (POST /v1/tail-stream?script=NAME), which groups
// them by invocation and publishes them to Kafka.
//
// The runtime calls tailStream() once per invocation of a producer, with its onset, and then
// the returned handler once per later event; the outcome comes last. Events are buffered per
// script (across that script's invocations, so a busy Worker costs few requests) and posted when
// the buffer holds TAILPIPE_BATCH_EVENTS events or TAILPIPE_MAX_BODY_BYTES, when an invocation's
// outcome arrives, or TAILPIPE_FLUSH_MS after the first buffered event, whichever is first.
//
// Why the posts of one script are chained (each starts once the previous one is done, retries
// included): the runtime does not await a handler's promise before it delivers the next event,
// so two posts started independently could arrive in either order, and the collector keeps the
// order it receives. Every pending post (and every armed timer) is held with ctx.waitUntil, so
// the runtime does not end the Tail Worker's invocation under it.
//
// The collector answers 202 once Kafka has every event, 503 + Retry-After while Kafka is away;
// network errors, 429 and 5xx are retried with exponential backoff and jitter (Retry-After when
// given) up to TAILPIPE_ATTEMPTS attempts; another 4xx (400, 401, 413) no retry can fix, so it
// is logged with console.error and those events dropped.
//
// JSON.stringify throws on BigInt, which 64-bit attribute values and diagnostics-channel
// messages can hold: they are written as decimal strings.

const DEFAULT_BATCH_EVENTS = 100;
const DEFAULT_FLUSH_MS = 1000;
const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024; // under the collector's 8 MiB default cap
const DEFAULT_ATTEMPTS = 5;
const DEFAULT_TIMEOUT_MS = 20_000; // the collector answers within ~10 s, 503 if Kafka is slow
const BACKOFF_MS = 500; // the first retry's delay before jitter; doubled for each next one
const MAX_DELAY_MS = 10_000; // a longer Retry-After is shortened: waitUntil has its limits
const ROUTE = "/v1/tail-stream";

const outboxes = new Map(); // script name ("" when unknown) -> Outbox, for this isolate's life
const encoder = new TextEncoder();

export default {
  tailStream(onset, env, ctx) {
    const config = settings(env);
    if (config === null) return undefined; // no handler: the runtime ends the session
    const script = onset?.event?.scriptName || env.TAILPIPE_SCRIPT || "";
    let outbox = outboxes.get(script);
    if (outbox === undefined) {
      outbox = new Outbox(script, config);
      outboxes.set(script, outbox);
    }
    const target = outbox;
    target.add(onset, ctx);
    return (event) => {
      target.add(event, ctx);
    };
  },
};

function settings(env) {
  if (!env.TAILPIPE_URL || !env.TAILPIPE_TOKEN) {
    console.error("tail-stream-forwarder: set TAILPIPE_URL (a var) and TAILPIPE_TOKEN (a secret)");
    return null;
  }
  return {
    base: String(env.TAILPIPE_URL),
    token: String(env.TAILPIPE_TOKEN),
    batchEvents: positive(env.TAILPIPE_BATCH_EVENTS, DEFAULT_BATCH_EVENTS),
    flushMs: positive(env.TAILPIPE_FLUSH_MS, DEFAULT_FLUSH_MS),
    maxBytes: positive(env.TAILPIPE_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES),
    attempts: positive(env.TAILPIPE_ATTEMPTS, DEFAULT_ATTEMPTS),
    timeoutMs: positive(env.TAILPIPE_TIMEOUT_MS, DEFAULT_TIMEOUT_MS),
  };
}

function positive(value, fallback) {
  const number = Number(value);
  return Number.isFinite(number) && number > 0 ? number : fallback;
}

// The events of one script not yet posted, and the chain its posts run on.
class Outbox {
  constructor(script, config) {
    this.script = script;
    this.config = config;
    this.url = endpoint(config.base, script);
    this.parts = []; // each event as JSON text
    this.bytes = 2; // of the body `[a,b]` the parts make
    this.timer = null; // {id, release}: the flush armed when the first part came in
    this.chain = Promise.resolve(); // settles when the latest post is done; never rejects
  }

  // Called by the runtime's event delivery: must never throw, or delivery stops.
  add(event, ctx) {
    try {
      const json = serialise(event);
      const size = encoder.encode(json).length + 1;
      if (this.parts.length > 0 && this.bytes + size > this.config.maxBytes) this.flush(ctx);
      this.parts.push(json);
      this.bytes += size;
      if (this.parts.length >= this.config.batchEvents || event?.event?.type === "outcome") {
        this.flush(ctx);
      } else if (this.timer === null) {
        this.arm(ctx);
      }
    } catch (err) {
      console.error(`tail-stream-forwarder: dropped an event: ${err}`);
    }
  }

  // Post what is buffered once the posts before it are done; held by this ctx until posted.
  flush(ctx) {
    this.disarm();
    if (this.parts.length === 0) return this.chain;
    const body = `[${this.parts.join(",")}]`;
    const count = this.parts.length;
    this.parts = [];
    this.bytes = 2;
    const posted = this.chain.then(() => post(this.url, this.config, body, count));
    this.chain = posted.catch(() => {}); // post() reports its own failures
    hold(ctx, posted);
    return posted;
  }

  // A timer that flushes after flushMs; ctx is held until it fires or a flush disarms it (the
  // post a flush starts is held by itself).
  arm(ctx) {
    let release;
    const held = new Promise((resolve) => {
      release = resolve;
    });
    const timer = { id: 0, release };
    timer.id = setTimeout(() => {
      // Still armed, unless a flush from another invocation's events disarmed it meanwhile
      // (a timer may not be cleared from another invocation's context).
      if (this.timer === timer) this.flush(ctx);
    }, this.config.flushMs);
    this.timer = timer;
    hold(ctx, held);
  }

  disarm() {
    const timer = this.timer;
    if (timer === null) return;
    this.timer = null;
    clearTimeout(timer.id);
    timer.release();
  }
}

function hold(ctx, promise) {
  if (ctx && typeof ctx.waitUntil === "function") ctx.waitUntil(promise);
}

// `${TAILPIPE_URL}/v1/tail-stream?script=NAME`; a TAILPIPE_URL that already names the route is
// taken as it is. No `script` when the name is unknown: the collector publishes null.
function endpoint(base, script) {
  let url = base.replace(/\/+$/, "");
  if (!url.endsWith(ROUTE)) url += ROUTE;
  return script ? `${url}?script=${encodeURIComponent(script)}` : url;
}

// An event as JSON, BigInts as decimal strings. A structured-clone value with a cycle (a
// diagnostics-channel message can hold one) is written with "[Circular]" at the repeat.
function serialise(event) {
  try {
    return JSON.stringify(event, plain);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    const ancestors = [];
    return JSON.stringify(event, function (key, value) {
      value = plain(key, value);
      if (value === null || typeof value !== "object") return value;
      while (ancestors.length > 0 && ancestors[ancestors.length - 1] !== this) ancestors.pop();
      if (ancestors.includes(value)) return "[Circular]";
      ancestors.push(value);
      return value;
    });
  }
}

function plain(_key, value) {
  return typeof value === "bigint" ? value.toString() : value;
}

// One body, tried up to config.attempts times; resolves (never rejects) once it was taken,
// refused, or given up on.
async function post(url, config, body, count) {
  for (let attempt = 1; attempt <= config.attempts; attempt++) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${config.token}` },
        body,
        signal: AbortSignal.timeout(config.timeoutMs),
      });
    } catch (err) {
      // A network failure or a timeout: the collector may be restarting. Same as a 503.
      if (attempt === config.attempts) {
        console.error(`tail-stream-forwarder: giving up on ${count} events after ${attempt} attempts: ${err}`);
        return;
      }
      await sleep(delay(attempt, null));
      continue;
    }
    const detail = await response.text().catch(() => "");
    if (response.ok) return;
    if (response.status !== 429 && response.status < 500) {
      console.error(`tail-stream-forwarder: collector refused ${count} events: ${response.status} ${detail}`);
      return;
    }
    if (attempt === config.attempts) {
      console.error(
        `tail-stream-forwarder: giving up on ${count} events after ${attempt} attempts: ${response.status} ${detail}`,
      );
      return;
    }
    await sleep(delay(attempt, response.headers.get("retry-after")));
  }
}

// Retry-After (seconds or an HTTP date) when given, else exponential from BACKOFF_MS; with up
// to a fifth more of jitter on top, or half off the exponential delay, so the retries of many
// isolates after one outage spread out. Capped at MAX_DELAY_MS.
function delay(attempt, retryAfter) {
  const asked = retryAfterMs(retryAfter);
  const ms =
    asked !== null
      ? asked * (1 + Math.random() / 5)
      : BACKOFF_MS * 2 ** (attempt - 1) * (0.5 + Math.random() / 2);
  return Math.min(ms, MAX_DELAY_MS);
}

function retryAfterMs(value) {
  if (value === null || value === undefined || value.trim() === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(seconds, 0) * 1000;
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(date - Date.now(), 0) : null;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

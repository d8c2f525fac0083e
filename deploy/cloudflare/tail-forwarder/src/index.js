// tail-forwarder: a Tail Worker that posts the trace items of the Workers it tails to
// `tailpipe collect` (POST /v1/tail), which publishes them to Kafka.
//
// The collector answers 202 once Kafka has every item, 503 + Retry-After while Kafka is away
// (retried here a bounded number of times), and 400/401/413 for a request that no retry can
// fix (logged, not retried). Big `events` arrays are split so no request exceeds MAX_BODY_BYTES.

const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024; // under the collector's 8 MiB default cap
const DEFAULT_ATTEMPTS = 4;
const MAX_DELAY_MS = 10_000; // a Retry-After above this is shortened: the tail handler is not free

export default {
  async tail(events, env, ctx) {
    if (!events || events.length === 0) return;
    if (!env.TAILPIPE_URL || !env.TAILPIPE_TOKEN) {
      console.error("tail-forwarder: set TAILPIPE_URL (a var) and TAILPIPE_TOKEN (a secret)");
      return;
    }
    const maxBytes = Number(env.TAILPIPE_MAX_BODY_BYTES) || DEFAULT_MAX_BODY_BYTES;
    const attempts = Number(env.TAILPIPE_ATTEMPTS) || DEFAULT_ATTEMPTS;
    for (const body of chunks(events, maxBytes)) {
      await post(env.TAILPIPE_URL, env.TAILPIPE_TOKEN, body, attempts);
    }
  },
};

// JSON arrays of at most maxBytes each (one oversized item still goes alone: the collector
// answers 413 and names it).
function* chunks(events, maxBytes) {
  let parts = [];
  let size = 2;
  for (const event of events) {
    const json = JSON.stringify(event);
    const bytes = new TextEncoder().encode(json).length + 1;
    if (parts.length > 0 && size + bytes > maxBytes) {
      yield `[${parts.join(",")}]`;
      parts = [];
      size = 2;
    }
    parts.push(json);
    size += bytes;
  }
  if (parts.length > 0) yield `[${parts.join(",")}]`;
}

async function post(url, token, body, attempts) {
  for (let attempt = 1; attempt <= attempts; attempt++) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body,
      });
    } catch (err) {
      // A network failure: the collector may be restarting. Same backoff as a 503.
      if (attempt === attempts) {
        console.error(`tail-forwarder: giving up after ${attempts} attempts: ${err}`);
        return;
      }
      await sleep(backoff(attempt, null));
      continue;
    }
    if (response.ok) return;
    const detail = await response.text();
    const retryable = [429, 502, 503, 504].includes(response.status);
    if (!retryable) {
      console.error(`tail-forwarder: collector refused the events: ${response.status} ${detail}`);
      return;
    }
    if (attempt === attempts) {
      console.error(`tail-forwarder: giving up after ${attempts} attempts: ${response.status} ${detail}`);
      return;
    }
    await sleep(backoff(attempt, response.headers.get("retry-after")));
  }
}

// Retry-After in seconds when the collector gave one, else exponential from 500 ms; capped.
function backoff(attempt, retryAfter) {
  const seconds = Number(retryAfter);
  const ms = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 500 * 2 ** (attempt - 1);
  return Math.min(ms, MAX_DELAY_MS);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

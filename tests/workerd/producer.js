// producer: the Worker whose invocations tests/test_workerd.py watches through its tails.
//
// Each route does one thing a real Worker does to its logs (the test drives every route in
// ROUTES of tests/test_workerd.py, and knows from the path what the invocation should hold).
// The planted secrets, model names and rate-limit numbers are repeated in the test: change
// them in both places.
//
// Also here: a Durable Object whose alarm logs (reached through /alarm), and a `scheduled`
// handler (workerd has no cron clock of its own in a capnp config: the driver Worker calls it
// through a service binding).

import { DurableObject } from "cloudflare:workers";

// A subclass of Error: workerd reports it with `name: "Error"` in `exceptions[]` and the real
// class only in the stack's header line, which the pipeline is meant to keep.
class CustomError extends Error {
  constructor(message) {
    super(message);
    this.name = "CustomError";
  }
}

// Secrets a careless Worker logs; none may reach PostgreSQL unredacted.
const GITHUB_TOKEN = "ghp_R3alT0kenValue0123456789abcdefABCDwd";
const BEARER = "9f8e7d6c5b4a39281706f5e4d3c2b1a0wd";
const AWS_KEY = "AKIAQ7WORKERDTEST123";
const DB_PASSWORD = "s3cr3t-Pa55word-wd";
const API_KEY = "k-4f1c9a7e2b8d6035wd";

// One kilobyte of text, numbered so the lines differ.
const KB = (n) => `bulk line ${String(n).padStart(3, "0")} ` + "x".repeat(1024 - 15);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const routes = {
  // Plain strings, one per console level.
  "/strings": () => {
    console.log("plain log line");
    console.info("info line");
    console.warn("warn line");
    console.error("error line");
    console.debug("debug line");
  },
  // Objects as arguments: the runtime keeps them structured in `message`.
  "/objects": () => {
    console.log("routing", { path: "/v1/chat", model: "claude-sonnet-4-5", nested: { a: [1, 2] } });
    console.log({ user: { id: 7, roles: ["admin"] }, ok: true });
    console.log([1, "two", { three: 3 }]);
  },
  // Numbers and the other scalars.
  "/numbers": () => {
    console.log(42, 3.5, -1, 0, 1e21);
    console.log(null, true, false, undefined);
  },
  // Application JSON logged as a string, as most Workers do.
  "/json": () => {
    console.log(JSON.stringify({ event: "order_created", order: 1234, total: 99.5 }));
    console.log(JSON.stringify([1, 2, 3]));
    console.log("  " + JSON.stringify({ event: "padded", ok: true }) + "  ");
  },
  // Error objects passed to console: the runtime renders them as "Name: message" strings.
  "/logged-errors": () => {
    console.error(new Error("plain logged error"));
    console.error("wrapped:", new TypeError("type logged error"));
    console.error(new CustomError("custom logged error"));
  },
  // U+0000 inside a string (binary data, a bad decoder): PostgreSQL's text cannot hold it.
  "/nul": () => {
    console.log("before\u0000after nul");
    console.log({ field: "nul\u0000inside an object" });
    // A string cut inside an emoji: a lone surrogate, which JSON.stringify writes as \ud83d.
    console.log("cut " + "🚀".slice(0, 1));
  },
  // Unicode beyond ASCII: emoji (astral plane), CJK, right-to-left scripts.
  "/unicode": () => {
    console.log("emoji 🚀🎉👩‍💻 done");
    console.log("CJK 漢字テスト 한국어");
    console.log("RTL שלום עולם مرحبا بالعالم");
  },
  // 300 lines of 1 KB: more than a classic tail item's 256 KB budget.
  "/bulk": () => {
    for (let n = 0; n < 300; n++) console.log(KB(n));
  },
  // Secrets in free text and in an object.
  "/secrets": () => {
    console.log(`cloning with token ${GITHUB_TOKEN}`);
    console.log(`upstream request headers: Authorization: Bearer ${BEARER}`);
    console.log(`aws access key id ${AWS_KEY} in use`);
    console.log(`connecting to postgres://app:${DB_PASSWORD}@db.internal:5432/app`);
    console.log("client config", { api_key: API_KEY, region: "eu" });
  },
  // LLM usage as the SDKs return it, some as objects and some as JSON strings.
  "/llm": () => {
    // Anthropic Messages API response (object argument).
    console.log("anthropic response", {
      id: "msg_01XFDUDYJgAACzvnptvVoYEL",
      type: "message",
      role: "assistant",
      model: "claude-sonnet-4-5-20250929",
      stop_reason: "end_turn",
      usage: {
        input_tokens: 1200,
        output_tokens: 340,
        cache_creation_input_tokens: 100,
        cache_read_input_tokens: 2000,
      },
    });
    // OpenAI Chat Completions response (JSON string).
    console.log(
      JSON.stringify({
        id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        object: "chat.completion",
        model: "gpt-4o-mini-2024-07-18",
        usage: { prompt_tokens: 900, completion_tokens: 120, total_tokens: 1020 },
      }),
    );
    // OpenAI Responses API response (object argument).
    console.log({
      id: "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
      object: "response",
      model: "gpt-5-mini-2025-08-07",
      usage: { input_tokens: 500, output_tokens: 60, total_tokens: 560 },
    });
    // Google Gemini generateContent response (JSON string).
    console.log(
      JSON.stringify({
        modelVersion: "gemini-2.5-flash",
        usageMetadata: { promptTokenCount: 700, candidatesTokenCount: 80, totalTokenCount: 780 },
      }),
    );
    // tailpipe's own documented form: extracted before any fix, the control of this route.
    console.log(
      JSON.stringify({
        event: "llm_usage",
        model: "claude-haiku-4-5",
        usage: { input_tokens: 300, output_tokens: 30 },
      }),
    );
  },
  // A response-header reading with no provider in the line.
  "/ratelimit-headers": () => {
    console.log("x-ratelimit-remaining: 37");
  },
  // Two GitHub readings, the newer one in the form the built-in rule misses; time only moves
  // across I/O in a Worker, so a timer separates them.
  "/ratelimit": async () => {
    console.log("github ratelimit remaining=4981 limit=5000");
    await sleep(20);
    console.warn("GitHub API rate limit remaining: 12");
  },
  // Uncaught exceptions: outcome "exception".
  "/throw": () => {
    console.log("about to throw");
    throw new Error("uncaught plain error");
  },
  "/throw-custom": () => {
    throw new CustomError("uncaught custom error");
  },
  // A rejection inside waitUntil, after the response: outcome stays "ok".
  "/wait-reject": (request, env, ctx) => {
    ctx.waitUntil(
      (async () => {
        await sleep(5);
        throw new Error("rejected inside waitUntil");
      })(),
    );
    console.log("response sent before the rejection");
  },
  // Statuses other than 200.
  "/not-found": () => new Response("nothing here", { status: 404 }),
  "/server-error": () => {
    console.error("failing on purpose");
    return new Response("boom", { status: 500 });
  },
  // The Durable Object: its fetch sets an alarm that logs when it fires.
  "/alarm": async (request, env) => {
    const stub = env.ALARMIST.get(env.ALARMIST.idFromName("alarmist"));
    return stub.fetch("http://do/arm");
  },
};

export default {
  async fetch(request, env, ctx) {
    const path = new URL(request.url).pathname;
    const route = routes[path];
    if (route === undefined) return new Response("no such route", { status: 404 });
    const answer = await route(request, env, ctx);
    return answer instanceof Response ? answer : new Response(`ok ${path}`);
  },

  async scheduled(controller, env, ctx) {
    console.log(`scheduled run for cron ${controller.cron}`);
  },
};

export class Alarmist extends DurableObject {
  async fetch(request) {
    console.log("durable object armed");
    await this.ctx.storage.setAlarm(Date.now() + 50);
    return new Response("armed");
  }

  async alarm() {
    console.log("durable object alarm fired");
  }
}

// producer: the Worker whose invocations tests/test_wrangler.py watches through `wrangler dev`.
//
// Under `wrangler dev` with several configurations, wrangler bundles middleware around this
// module: one prepends a `[producer]` argument to console.log, .info and .debug (not .warn and
// .error), another catches an error thrown from `fetch` and answers it with a JSON 500 itself.
// Each route does one thing the test then looks for in PostgreSQL (the test drives every route
// of ROUTES in tests/test_wrangler.py). The planted secrets are repeated in the test.

const GITHUB_TOKEN = "ghp_WrangL3rT0kenValue0123456789abcdefWR";
const API_KEY = "k-7a2e9c4b1d8f6035wr";
const DB_PASSWORD = "s3cr3t-Wr4ngler-pw";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const routes = {
  // One string per console level: which of them wrangler wraps.
  "/levels": () => {
    console.log("plain log line");
    console.info("info line");
    console.warn("warn line");
    console.error("error line");
    console.debug("debug line");
  },
  // Application JSON logged as a string, and an object argument.
  "/json": () => {
    console.log(JSON.stringify({ event: "order_created", order: 1234, total: 99.5 }));
    console.log("routing", { path: "/v1/chat", nested: { a: [1, 2] } });
    // tailpipe's documented LLM usage form, and a GitHub rate-limit reading.
    console.log(
      JSON.stringify({
        event: "llm_usage",
        model: "claude-haiku-4-5",
        usage: { input_tokens: 300, output_tokens: 30 },
      }),
    );
    console.log("GitHub API rate limit remaining: 12");
  },
  // U+0000, which PostgreSQL's text cannot hold, in a wrapped and an unwrapped line.
  "/nul": () => {
    console.log("before\u0000after nul");
    console.error("error\u0000with nul");
  },
  // Error objects passed to console: rendered as "Name: message" strings.
  "/logged-errors": () => {
    console.error(new Error("plain logged error"));
    console.log("wrapped:", new TypeError("type logged error"));
  },
  // Secrets in free text and in an object (the request also carries some: see the test).
  "/secrets": () => {
    console.log(`cloning with token ${GITHUB_TOKEN}`);
    console.log("client config", { api_key: API_KEY, region: "eu" });
    console.error(`connecting to postgres://app:${DB_PASSWORD}@db.internal:5432/app`);
  },
  // An uncaught error: wrangler's middleware answers it before the runtime sees it.
  "/throw": () => {
    console.log("about to throw");
    throw new Error("uncaught plain error");
  },
  // A rejection inside waitUntil, after the response: no middleware is in its way.
  "/wait-reject": (request, env, ctx) => {
    ctx.waitUntil(
      (async () => {
        await sleep(5);
        throw new Error("rejected inside waitUntil");
      })(),
    );
    console.log("response sent before the rejection");
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
};

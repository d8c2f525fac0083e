// stream-marks: a second producer for tests/test_workerd_stream_forwarder.py, doing what the
// main producer (producer.js) does not, each on a route:
//
// - /bigint: a diagnostics-channel message holding BigInts, which reach a streaming Tail Worker
//   as BigInts (as 64-bit attribute values do) and make JSON.stringify throw;
// - /slow: an invocation that lasts until the receiver has been sent its onset (GET HOLD_URL
//   answers once the forwarder's post holding it arrived), so the forwarder must post it on its
//   timer, before the outcome, for the invocation to end.
import dc from "node:diagnostics_channel";

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    if (path === "/bigint") {
      dc.channel("tailpipe.test").publish({ big: 9007199254740993n, nested: [1n, { deeper: -2n }] });
      console.log("published", { count: 3 });
      return new Response("ok /bigint");
    }
    if (path === "/slow") {
      console.log("waiting for the receiver");
      const held = await fetch(env.HOLD_URL);
      console.log("released", held.status);
      return new Response(`ok /slow ${held.status}`, { status: held.status });
    }
    return new Response("no such route", { status: 404 });
  },
};

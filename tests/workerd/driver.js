// driver: fires the producer's `scheduled` handler. A capnp config has no cron clock, and
// workerd has no HTTP route for it, but with the `service_binding_extra_handlers` flag a
// service binding exposes `scheduled()` (workerd's own cron module uses the same call). The
// driver is not tailed: only the producer's invocation reaches the tails.

export default {
  async fetch(request, env) {
    const cron = new URL(request.url).searchParams.get("cron") ?? "*/5 * * * *";
    const result = await env.PRODUCER.scheduled({ cron, scheduledTime: new Date() });
    return Response.json(result);
  },
};

// capture: a Tail Worker beside the project's forwarder, so the test knows exactly what the
// runtime reported. It posts each `events` batch it receives, as JSON, to CAPTURE_URL (an HTTP
// server run by tests/test_workerd.py); the test compares that with what PostgreSQL holds.

export default {
  async tail(events, env) {
    const response = await fetch(env.CAPTURE_URL, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(events),
    });
    // The test server answers 204; anything else is a broken test set-up, worth a log line.
    if (!response.ok) console.error(`capture: ${response.status} from ${env.CAPTURE_URL}`);
  },
};

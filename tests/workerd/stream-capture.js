// stream-capture: a streaming Tail Worker that posts every event of every invocation it is given,
// one POST per event chained in the order the runtime gave them (the runtime does not await a
// handler before the next event), to CAPTURE_URL. BigInts become strings: JSON.stringify throws
// on them. Used by tests/support/stream_capture.py to record the runtime's streaming tail events.
const plain = (_key, value) => (typeof value === "bigint" ? value.toString() : value);

export default {
  tailStream(onset, env) {
    let chain = Promise.resolve();
    const post = (event) => {
      chain = chain.then(() =>
        fetch(env.CAPTURE_URL, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify([event], plain),
        }),
      );
      return chain;
    };
    post(onset);
    return (event) => post(event);
  },
};

# workerd config of tests/test_workerd_stream_forwarder.py: the producer of workerd.capnp and a
# second one (stream-marks.js: BigInts, a slow invocation), each streaming its events
# (`streamingTails`, no flag needed in this version) to the project's own
# tail-stream-forwarder, unchanged, and to the capture Worker of stream.capnp, which tells the
# test what the runtime delivered.
#
#   workerd serve tests/workerd/stream-forward.capnp config \
#       -s producer=127.0.0.1:<port> -s marks=127.0.0.1:<port>
#
# From the environment: TAILPIPE_URL and TAILPIPE_TOKEN (the forwarders', as in its
# wrangler.toml), CAPTURE_URL (the capture Worker's) and HOLD_URL (stream-marks' /slow).
# Each producer has a forwarder of its own, as TAILPIPE_SCRIPT names one script.

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "producer", worker = .producer),
    (name = "marks", worker = .marks),
    (name = "forwarder", worker = .forwarder),
    (name = "forwarder-marks", worker = .forwarderMarks),
    (name = "capture", worker = .capture),
    # The receiver listens on 127.0.0.1; the default network allows public addresses only.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "producer", address = "127.0.0.1:8787", http = (), service = "producer"),
    (name = "marks", address = "127.0.0.1:8788", http = (), service = "marks"),
  ],
);

const compatibilityDate :Text = "2025-09-01";

const producer :Workerd.Worker = (
  modules = [(name = "producer.js", esModule = embed "producer.js")],
  compatibilityDate = .compatibilityDate,
  bindings = [(name = "ALARMIST", durableObjectNamespace = "Alarmist")],
  durableObjectNamespaces = [(className = "Alarmist", uniqueKey = "tailpipe-test-alarmist")],
  durableObjectStorage = (inMemory = void),
  streamingTails = ["forwarder", "capture"],
);

const marks :Workerd.Worker = (
  modules = [(name = "stream-marks.js", esModule = embed "stream-marks.js")],
  compatibilityDate = .compatibilityDate,
  compatibilityFlags = ["nodejs_compat"],  # node:diagnostics_channel
  bindings = [(name = "HOLD_URL", fromEnvironment = "HOLD_URL")],
  streamingTails = ["forwarder-marks", "capture"],
);

const forwarder :Workerd.Worker = (
  modules = [(
    name = "index.js",
    esModule = embed "../../deploy/cloudflare/tail-stream-forwarder/src/index.js",
  )],
  compatibilityDate = "2025-09-01",  # the forwarder's wrangler.toml
  bindings = [
    (name = "TAILPIPE_URL", fromEnvironment = "TAILPIPE_URL"),
    (name = "TAILPIPE_TOKEN", fromEnvironment = "TAILPIPE_TOKEN"),
    (name = "TAILPIPE_SCRIPT", text = "producer"),
  ],
);

const forwarderMarks :Workerd.Worker = (
  modules = [(
    name = "index.js",
    esModule = embed "../../deploy/cloudflare/tail-stream-forwarder/src/index.js",
  )],
  compatibilityDate = "2025-09-01",
  bindings = [
    (name = "TAILPIPE_URL", fromEnvironment = "TAILPIPE_URL"),
    (name = "TAILPIPE_TOKEN", fromEnvironment = "TAILPIPE_TOKEN"),
    (name = "TAILPIPE_SCRIPT", text = "stream-marks"),
  ],
);

const capture :Workerd.Worker = (
  modules = [(name = "stream-capture.js", esModule = embed "stream-capture.js")],
  compatibilityDate = .compatibilityDate,
  bindings = [(name = "CAPTURE_URL", fromEnvironment = "CAPTURE_URL")],
);

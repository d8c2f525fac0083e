# workerd config of tests/test_workerd_stream.py: streaming Tail Workers through the whole
# pipeline. The producer of workerd.capnp (with its driver, for the scheduled handler) and
# stream-marks.js (BigInts, an invocation held open) each stream their events (`streamingTails`,
# no flag needed in this version) to the project's own tail-stream-forwarder, unchanged, which
# posts to a real `tailpipe collect`; and to a capture Worker of its own (stream-capture.js),
# which posts them to the test, so that it knows what the runtime delivered.
#
#   workerd serve tests/workerd/stream-e2e.capnp config --experimental \
#       -s producer=127.0.0.1:<port> -s marks=127.0.0.1:<port> -s driver=127.0.0.1:<port>
#
# From the environment: TAILPIPE_URL (the collector's base URL) and TAILPIPE_TOKEN (the
# forwarders', as in its wrangler.toml), CAPTURE_URL and CAPTURE_MARKS_URL (each producer's
# capture Worker's: the test tells the producers apart by where their events arrive) and
# HOLD_URL (stream-marks' /slow). Each producer has a forwarder of its own, as TAILPIPE_SCRIPT
# names one script.

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "producer", worker = .producer),
    (name = "marks", worker = .marks),
    (name = "driver", worker = .driver),
    (name = "forwarder", worker = .forwarder),
    (name = "forwarder-marks", worker = .forwarderMarks),
    (name = "capture", worker = .capture),
    (name = "capture-marks", worker = .captureMarks),
    # The collector and the test listen on 127.0.0.1; the default network allows public
    # addresses only.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "producer", address = "127.0.0.1:8787", http = (), service = "producer"),
    (name = "marks", address = "127.0.0.1:8788", http = (), service = "marks"),
    (name = "driver", address = "127.0.0.1:8789", http = (), service = "driver"),
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
  streamingTails = ["forwarder-marks", "capture-marks"],
);

const driver :Workerd.Worker = (
  modules = [(name = "driver.js", esModule = embed "driver.js")],
  compatibilityDate = .compatibilityDate,
  # Lets a service binding call the target's scheduled() handler (experimental here).
  compatibilityFlags = ["service_binding_extra_handlers"],
  bindings = [(name = "PRODUCER", service = "producer")],
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
    (name = "TAILPIPE_SCRIPT", text = "stream-producer"),
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

const captureMarks :Workerd.Worker = (
  modules = [(name = "stream-capture.js", esModule = embed "stream-capture.js")],
  compatibilityDate = .compatibilityDate,
  bindings = [(name = "CAPTURE_URL", fromEnvironment = "CAPTURE_MARKS_URL")],
);

# workerd config of tests/support/stream_capture.py: the producer of tests/workerd.capnp with a
# streaming Tail Worker (`streamingTails`, which needs no flag in this version) that posts every
# event to CAPTURE_URL, from the environment.
#
#   workerd serve tests/workerd/stream.capnp config -s producer=127.0.0.1:<port>

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "producer", worker = .producer),
    (name = "capture", worker = .capture),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "producer", address = "127.0.0.1:8787", http = (), service = "producer")],
);

const compatibilityDate :Text = "2025-09-01";

const producer :Workerd.Worker = (
  modules = [(name = "producer.js", esModule = embed "producer.js")],
  compatibilityDate = .compatibilityDate,
  bindings = [(name = "ALARMIST", durableObjectNamespace = "Alarmist")],
  durableObjectNamespaces = [(className = "Alarmist", uniqueKey = "tailpipe-test-alarmist")],
  durableObjectStorage = (inMemory = void),
  streamingTails = ["capture"],
);

const capture :Workerd.Worker = (
  modules = [(name = "stream-capture.js", esModule = embed "stream-capture.js")],
  compatibilityDate = .compatibilityDate,
  bindings = [(name = "CAPTURE_URL", fromEnvironment = "CAPTURE_URL")],
);

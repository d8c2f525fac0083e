# workerd config of tests/test_workerd.py: the producer Worker tailed by the project's own
# tail-forwarder (unchanged) and by a capture Worker, plus a driver for the scheduled handler.
#
#   workerd serve tests/workerd/workerd.capnp config \
#       -s producer=127.0.0.1:<port> -s driver=127.0.0.1:<port>
#
# Nothing here depends on the run: the test picks the ports with `-s` and passes the URLs and
# the token in the environment (`fromEnvironment` bindings): TAILPIPE_URL, TAILPIPE_TOKEN (the
# forwarder's, as in its wrangler.toml) and CAPTURE_URL.

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "producer", worker = .producer),
    (name = "forwarder", worker = .forwarder),
    (name = "capture", worker = .capture),
    (name = "driver", worker = .driver),
    # Every Worker's global fetch() goes to "internet" by default. The default network allows
    # public addresses only; the collector and the capture server listen on 127.0.0.1.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "producer", address = "127.0.0.1:8787", http = (), service = "producer"),
    (name = "driver", address = "127.0.0.1:8788", http = (), service = "driver"),
  ],
);

# Recent enough for `DurableObject` from "cloudflare:workers" and RPC on service bindings.
const compatibilityDate :Text = "2025-09-01";

const producer :Workerd.Worker = (
  modules = [(name = "producer.js", esModule = embed "producer.js")],
  compatibilityDate = .compatibilityDate,
  bindings = [(name = "ALARMIST", durableObjectNamespace = "Alarmist")],
  durableObjectNamespaces = [(className = "Alarmist", uniqueKey = "tailpipe-test-alarmist")],
  durableObjectStorage = (inMemory = void),
  # Classic tail items, as Cloudflare delivers them to `tail(events)`.
  tails = ["forwarder", "capture"],
);

const forwarder :Workerd.Worker = (
  modules = [(
    name = "index.js",
    esModule = embed "../../deploy/cloudflare/tail-forwarder/src/index.js",
  )],
  compatibilityDate = "2025-01-01",  # the forwarder's wrangler.toml
  bindings = [
    (name = "TAILPIPE_URL", fromEnvironment = "TAILPIPE_URL"),
    (name = "TAILPIPE_TOKEN", fromEnvironment = "TAILPIPE_TOKEN"),
  ],
);

const capture :Workerd.Worker = (
  modules = [(name = "capture.js", esModule = embed "capture.js")],
  compatibilityDate = .compatibilityDate,
  bindings = [(name = "CAPTURE_URL", fromEnvironment = "CAPTURE_URL")],
);

const driver :Workerd.Worker = (
  modules = [(name = "driver.js", esModule = embed "driver.js")],
  compatibilityDate = .compatibilityDate,
  # Lets a service binding call the target's scheduled() handler.
  compatibilityFlags = ["service_binding_extra_handlers"],
  bindings = [(name = "PRODUCER", service = "producer")],
);

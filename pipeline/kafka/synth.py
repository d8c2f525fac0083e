"""Synthetic tail events for `tailpipe loadgen`: realistic, varied, deterministic for a seed.

Pure: the same seed and start time give byte-identical messages. Shapes follow what a Tail
Worker receives (trace items, about 0.8 KB with three log lines): a mix of event types and
outcomes, exceptions with stacks, GitHub API lines with rate-limit numbers, LLM usage records
(some as double-encoded JSON), repository scans, occasional secrets that the pipeline must
redact, a configurable share of malformed messages, and a configurable share of well-formed
ones that cannot be stored (a script name longer than an index key holds).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.formats.identity import item_key

SCRIPTS = (
    "api-gateway",
    "auth-edge",
    "billing-worker",
    "repo-scanner",
    "llm-router",
    "image-resizer",
    "webhooks",
    "cron-reports",
)
EVENTS = ("fetch",) * 16 + ("scheduled", "queue", "alarm", "rpc", "email", "websocket")
OUTCOMES = ("ok",) * 90 + ("exception",) * 5 + ("exceededCpu", "canceled", "exceededMemory")
PATHS = ("/", "/api/users", "/api/orders", "/v1/chat", "/webhooks/github", "/health")
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o", "gpt-4o-mini", "mystery-model-x")
REPOS = ("acme/api", "acme/web", "acme/infra", "octo/cli", "octo/docs")
SECRETS = (
    "Authorization: Bearer ghp_{r}",
    "retrying https://api.example.com/v1/items?token={r}&page=2",
    "using key sk-ant-api03-{r}",
    "db url postgres://app:hunter{r}@db.internal:5432/main",
    "aws key AKIA{R}",
)
POISON = (
    b'{"scriptName": "api-gateway", "outcome": ',
    b"\xff\xfe\x00garbage\x00",
    b"[1, 2, 3]",
    b'{"scriptName": 7, "logs": "none"}',
    b"null",
    b'{"scriptName": "webhooks", "eventTimestamp": "yesterday", "logs": []}',
)


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes
    poison: bool
    rejected: bool = False
    """Well-formed, but its script name is longer than a PostgreSQL index key holds: the decoder
    refuses it (`fields.MAX_NAME_BYTES`), so it is dead-lettered."""


# random.Random.choice and randint cost about a microsecond each in pure Python; these two use
# the C-level random() and keep generation well above the publishing rate.
def _pick(rng: random.Random, options: tuple[Any, ...]) -> Any:
    return options[int(rng.random() * len(options))]


def _int(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _stack(rng: random.Random) -> str:
    return "\n".join(
        f"    at {fn} (worker.js:{_int(rng, 1, 400)}:{_int(rng, 1, 80)})"
        for fn in ("handle", "route", "fetch")[: _int(rng, 1, 3)]
    )


def _logs(rng: random.Random, ts: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for _ in range(3):
        roll = rng.random()
        level, message = "log", ["handled request", {"ms": _int(rng, 1, 90)}]
        if roll < 0.25:
            status = _pick(rng, (200, 200, 200, 201, 304, 403, 404, 429, 500))
            repo = _pick(rng, REPOS)
            level = "info" if status < 400 else "warn"
            message = [f"GET /repos/{repo} {status} in {_int(rng, 20, 900)}ms"]
        elif roll < 0.35:
            message = [f"github ratelimit remaining={_int(rng, 0, 5000)} limit=5000"]
        elif roll < 0.45:
            usage = {"input_tokens": _int(rng, 10, 8000), "output_tokens": _int(rng, 5, 2000)}
            model = _pick(rng, MODELS)
            message = [
                f"llm usage model={model} input_tokens={usage['input_tokens']} "
                f"output_tokens={usage['output_tokens']}"
            ]
            if rng.random() < 0.5:  # how application JSON often arrives: double-encoded
                payload = {"event": "llm_usage", "model": model, "usage": usage}
                message = [orjson.dumps(payload).decode()]
        elif roll < 0.52:
            repo, files = _pick(rng, REPOS), _int(rng, 1, 4000)
            state = _pick(rng, ("started", "completed", "completed", "failed"))
            message = [f"scan {state} repo={repo} files={files} duration_ms={_int(rng, 50, 60000)}"]
        elif roll < 0.55:
            level = "error"
            message = ["upstream failed", {"status": 502, "attempt": _int(rng, 1, 3)}]
        elif roll < 0.57:
            secret = _pick(rng, SECRETS)
            token = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=36))
            message = [secret.format(r=token, R=token[:16].upper())]
        lines.append({"timestamp": ts + _int(rng, 0, 40), "level": level, "message": message})
    return lines


def _event(rng: random.Random, kind: str) -> dict[str, Any] | None:
    if kind == "fetch":
        method = _pick(rng, ("GET", "GET", "GET", "POST", "PUT", "DELETE"))
        url = f"https://{_pick(rng, ('api', 'www', 'hooks'))}.example.com{_pick(rng, PATHS)}"
        if rng.random() < 0.02:
            url += "?api_key=" + "".join(rng.choices("0123456789abcdef", k=24))
        return {
            "request": {
                "url": url,
                "method": method,
                "headers": {
                    "user-agent": "Mozilla/5.0 (X11; Linux x86_64)",
                    "accept": "application/json",
                    "cf-ray": f"{rng.getrandbits(64):016x}-FRA",
                },
                "cf": {"colo": _pick(rng, ("FRA", "AMS", "IAD", "SJC")), "country": "DE"},
            },
            "response": {"status": _pick(rng, (200,) * 12 + (201, 204, 301, 400, 404, 500))},
        }
    if kind == "scheduled":
        return {"cron": "*/5 * * * *", "scheduledTime": 1_700_000_000_000}
    if kind == "queue":
        return {"queue": "jobs", "batchSize": _int(rng, 1, 100)}
    if kind == "alarm":
        return {"scheduledTime": "2026-11-29T00:00:00.000Z"}
    if kind == "rpc":
        return {"rpcMethod": _pick(rng, ("getUser", "charge", ""))}
    if kind == "email":
        return {"mailFrom": "a@example.com", "rcptTo": "b@example.com", "rawSize": 2048}
    if kind == "websocket":
        return {"getWebSocketEvent": {"webSocketEventType": "message"}}
    return None


def trace_item(rng: random.Random, ts: int) -> dict[str, Any]:
    """One Workers trace item, as a Tail Worker's `tail(events)` receives it."""
    outcome = _pick(rng, OUTCOMES)
    item: dict[str, Any] = {
        "scriptName": _pick(rng, SCRIPTS),
        "outcome": outcome,
        "eventTimestamp": ts,
        "event": _event(rng, _pick(rng, EVENTS)),
        "logs": _logs(rng, ts),
        "exceptions": [],
        "diagnosticsChannelEvents": [],
        "executionModel": "stateless",
        "truncated": False,
        "cpuTime": _int(rng, 0, 30),
        "wallTime": int(rng.lognormvariate(3.5, 0.9)),
        "scriptVersion": {"id": f"{rng.getrandbits(64):016x}-v{_int(rng, 1, 9)}"},
    }
    if outcome == "exception":
        item["exceptions"] = [
            {
                "timestamp": ts + item["wallTime"],
                "name": "TypeError",
                "message": f"Cannot read properties of undefined (reading 'id{_int(rng, 1, 9)}')",
                "stack": _stack(rng),
            }
        ]
    return item


UNSTORABLE_SUFFIX = "-" + "x" * 1100
"""Makes a script name too long to store. (A NUL, the old way, is now repaired and stored.)"""


def _reject(item: dict[str, Any]) -> None:
    item["scriptName"] += UNSTORABLE_SUFFIX


def messages(
    seed: int,
    start_ms: int,
    *,
    poison_ratio: float = 0.0,
    reject_ratio: float = 0.0,
    step_ms: int = 7,
) -> Iterator[Message]:
    """An endless, deterministic stream: message i has event time `start_ms + i * step_ms`.

    `poison_ratio` of the messages are undecodable, `reject_ratio` well-formed but unstorable;
    a message is never both."""
    if not (poison_ratio >= 0.0 and reject_ratio >= 0.0 and poison_ratio + reject_ratio <= 1.0):
        raise ValueError(f"ratios out of range: poison {poison_ratio}, reject {reject_ratio}")
    rng = random.Random(seed)
    ts = start_ms
    while True:
        # One roll decides both, and none at all when both ratios are 0, so a stream without
        # rejected messages draws exactly the numbers it drew before reject_ratio existed.
        roll = rng.random() if poison_ratio or reject_ratio else 1.0
        if roll < poison_ratio:
            yield Message(None, _pick(rng, POISON), poison=True)
        else:
            item = trace_item(rng, ts)
            rejected = roll < poison_ratio + reject_ratio
            if rejected:
                _reject(item)
            yield Message(item_key(item), orjson.dumps(item), False, rejected)
        ts += step_ms

"""`tailpipe api`'s `/metrics`: every request counted and timed by route template, method and
status class, each label from a fixed set whatever clients send, every declared route exported
at 0 from the start, served without a token. The real app, against a real (empty) database;
test_prometheus has a real Prometheus scrape it with deploy/'s job."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.api.app import create_app
from pipeline.api.metrics import Metrics
from pipeline.collector.metrics import Metrics as CollectorMetrics
from pipeline.settings import Settings
from pipeline.web import metrics as http_metrics
from tests.conftest import ROOT, free_port
from tests.support.promql import series_of

READ, WRITE = "read-token-0123456789", "write-token-0123456789"
REQUESTS, SECONDS = "tailpipe_api_requests", "tailpipe_api_request_duration_seconds"
Labels = tuple[str, str, str]


@pytest.fixture
def api(migrated: Settings) -> Iterator[TestClient]:
    settings = replace(migrated, api_read_tokens=(READ,), api_write_tokens=(WRITE,))
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {READ}"
        yield client


def scrape(client: TestClient) -> dict[str, dict[Labels, float]]:
    """Samples by name, keyed by (route, method, status), from a scrape without a token."""
    response = client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    found: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.pop("le") != "+Inf":
                continue
            key = (labels.get("route", ""), labels.get("method", ""), labels.get("status", ""))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


def counts(client: TestClient) -> dict[Labels, float]:
    return scrape(client)[REQUESTS + "_total"]


def test_every_declared_route_is_exported_at_0_and_metrics_needs_no_token(
    api: TestClient,
) -> None:
    first = scrape(api)
    declared = {
        ("/api/logs/recent", "GET"), ("/api/logs/errors", "GET"), ("/api/logs/performance", "GET"),
        ("/api/logs/scripts", "GET"), ("/api/logs/api-usage", "GET"),
        ("/api/logs/scan-activity", "GET"), ("/api/logs/critical-alerts", "GET"),
        ("/api/errors/{fingerprint}", "PATCH"), ("/api/invocations/{invocation}", "GET"),
        ("/api/traces/{trace_id}", "GET"), ("/api/traces/operations", "GET"),
        ("/", "GET"), ("/docs", "GET"),
        ("/openapi.json", "GET"), ("/static", "GET"), ("/healthz", "GET"), ("/readyz", "GET"),
        ("/metrics", "GET"),
    }  # fmt: skip
    expected = {(r, m, s) for r, m in declared for s in ("2xx", "4xx", "5xx")}
    assert set(first[REQUESTS + "_total"]) == expected
    assert set(first[SECONDS + "_count"]) == expected
    assert set(first[SECONDS + "_bucket"]) == expected
    assert set(first[REQUESTS + "_total"].values()) == {0}
    # Not part of the API's published document: it is for Prometheus, not for clients.
    assert "/metrics" not in api.get("/openapi.json").json()["paths"]
    assert api.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_requests_are_counted_and_timed_by_route_template_method_and_status(
    api: TestClient,
) -> None:
    before = counts(api)
    for _ in range(3):
        assert api.get("/api/logs/recent", params={"hours": 2}).status_code == 200
    assert api.get("/api/logs/performance").status_code == 200
    assert api.get("/api/logs/recent", params={"hours": 0}).status_code == 422
    assert api.get("/api/logs/errors", headers={"Authorization": "Bearer no"}).status_code == 401
    for fingerprint in ("0123456789abcdef", "fedcba9876543210"):
        missing = api.patch(
            f"/api/errors/{fingerprint}",
            json={"status": "resolved"},
            headers={"Authorization": f"Bearer {WRITE}"},
        )
        assert missing.status_code == 404
    assert api.delete("/api/logs/recent").status_code == 405
    assert api.get("/static/swagger-ui/swagger-ui.css").status_code == 200
    assert api.get("/healthz").status_code == 200
    after = counts(api)

    def added(route: str, method: str, status: str) -> float:
        return after[(route, method, status)] - before.get((route, method, status), 0)

    assert added("/api/logs/recent", "GET", "2xx") == 3
    assert added("/api/logs/recent", "GET", "4xx") == 1
    assert added("/api/logs/performance", "GET", "2xx") == 1
    assert added("/api/logs/errors", "GET", "4xx") == 1
    assert added("/api/errors/{fingerprint}", "PATCH", "4xx") == 2  # the template, not the path
    assert added("/api/logs/recent", "DELETE", "4xx") == 1
    assert added("/static", "GET", "2xx") == 1
    assert added("/healthz", "GET", "2xx") == 1
    assert added("/metrics", "GET", "2xx") == 1  # the scrape of `before`
    assert sum(after.values()) - sum(before.values()) == 12

    seconds = scrape(api)
    recent = ("/api/logs/recent", "GET", "2xx")
    assert seconds[SECONDS + "_count"][recent] == 3
    assert seconds[SECONDS + "_bucket"][recent] == 3  # le="+Inf"
    assert 0 < seconds[SECONDS + "_sum"][recent] < 30


def test_what_clients_send_never_becomes_a_label(api: TestClient) -> None:
    """Paths, methods and tokens from outside: a fixed set of series, however many there are."""
    api.get("/nothing-here")
    api.request("PROPFIND", "/nothing-here")
    api.get("/api/logs/recent/")  # the trailing slash: a redirect to the route
    grown = set(counts(api))
    for n in range(200):
        api.get(f"/wp-admin/{n}.php?token=secret-{n}")
        api.request(["PROPFIND", "PURGE", "MKCOL", "TRACE"][n % 4], f"/x/{n}")
        api.get(f"/api/logs/recent/{n}")
        api.patch(f"/api/errors/{n:016x}", json={}, headers={"Authorization": f"Bearer {n}"})
    text = api.get("/metrics").text
    assert set(counts(api)) == grown | {("other", "other", "4xx")}
    for leaked in ("wp-admin", "secret-", "PROPFIND", "/x/", "0000000000000001"):
        assert leaked not in text
    routes = {r for r, _, _ in grown} - {"other"}
    assert {r for r, _, _ in counts(api)} == routes | {"other"}
    assert {m for _, m, _ in counts(api)} <= http_metrics.METHODS | {"other"}
    assert {s for _, _, s in counts(api)} <= set(http_metrics.STATUSES)


def test_a_database_outage_counts_as_5xx(settings: Settings) -> None:
    down = replace(
        settings,
        api_read_tokens=(READ,),
        postgres_dsn=f"postgresql://tailpipe@127.0.0.1:{free_port()}/tailpipe",
        connect_timeout=1.0,
    )
    with TestClient(create_app(down)) as client:
        client.headers["Authorization"] = f"Bearer {READ}"
        assert client.get("/api/logs/recent").status_code == 503
        assert client.get("/readyz").status_code == 503
        after = counts(client)
    assert after[("/api/logs/recent", "GET", "5xx")] == 1
    assert after[("/readyz", "GET", "5xx")] == 1


def test_a_request_that_raises_is_counted_as_the_500_it_gets() -> None:
    """The middleware on its own, around an app whose one route fails."""

    async def fails(request: Request) -> Response:
        raise RuntimeError("a bug")

    async def fine(request: Request) -> Response:
        return Response("ok")

    routes = [Route("/fails", fails), Route("/fine/{n:int}", fine, methods=["GET", "POST"])]
    metrics = Metrics.create(http_metrics.RouteTable(routes))
    app = Starlette(
        routes=routes, middleware=[Middleware(http_metrics.Instrumented, metrics=metrics)]
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/fails").status_code == 500
        assert client.post("/fine/7").status_code == 200
        assert client.get("/fine/x").status_code == 404  # the convertor refuses: no route
    value = metrics.requests.labels
    assert value("/fails", "GET", "5xx")._value.get() == 1
    assert value("/fine/{n:int}", "POST", "2xx")._value.get() == 1
    assert value("other", "GET", "4xx")._value.get() == 1
    assert metrics.routes.methods == {"/fails": ("GET",), "/fine/{n:int}": ("GET", "POST")}


def test_the_runbook_names_every_metric_of_the_api_and_the_collector() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for name in {*series_of(Metrics.create(http_metrics.RouteTable(()))),
                 *series_of(CollectorMetrics.create())}:  # fmt: skip
        family = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f"`{family}" in runbook, family

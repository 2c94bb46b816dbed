"""Probing I/O: concurrency, timeouts, failure reasons, and what an HTTP probe counts as reachable."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
import pytest

from aybiza.routing.health import HealthConfig, HealthRegistry, HealthState
from aybiza.routing.probes import HealthProber, HttpProbe, describe_failure
from aybiza.routing.regions import default_catalog

NO_JITTER = HealthConfig(ejection_jitter=0.0)


@pytest.mark.anyio
async def test_prober_probes_concurrently_with_a_timeout() -> None:
    catalog = default_catalog()
    regions = [catalog.region(name) for name in ("us-east-1", "eu-west-2", "us-west-2")]
    registry = HealthRegistry([r.name for r in regions], NO_JITTER)

    async def probe(region: object) -> None:
        name = getattr(region, "name", "")
        if name == "eu-west-2":
            raise ConnectionRefusedError("refused")
        if name == "us-west-2":
            await anyio.sleep(10)  # hangs: the prober's timeout must cut it

    prober = HealthProber(registry, regions, probe, timeout_s=0.2)
    with anyio.fail_after(5):
        for _ in range(2):
            results = await prober.probe_once()
    assert results["us-east-1"] is not None
    assert results["eu-west-2"] is None and results["us-west-2"] is None
    states = {name: registry.tracker(name).state for name in registry.regions}
    assert states == {
        "us-east-1": HealthState.HEALTHY,
        "eu-west-2": HealthState.UNHEALTHY,
        "us-west-2": HealthState.UNHEALTHY,
    }


@pytest.mark.anyio
async def test_prober_run_loops_until_cancelled() -> None:
    catalog = default_catalog()
    regions = [catalog.region("us-east-1")]
    registry = HealthRegistry(["us-east-1"], NO_JITTER)
    calls: list[str] = []

    async def probe(region: object) -> None:
        calls.append(getattr(region, "name", ""))

    prober = HealthProber(registry, regions, probe, interval_s=0.01, edge_interval_s=0.01, unhealthy_interval_s=0.01)
    with anyio.move_on_after(0.2):
        await prober.run()
    assert len(calls) >= 3


def _transport(status: int) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status)

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "ok"), [(200, True), (403, True), (404, True), (503, False)])
async def test_http_probe_counts_any_answer_below_500_as_reachable(status: int, ok: bool) -> None:
    catalog = default_catalog().with_endpoints({"eu-west-2": "http://lab.invalid"}, "/ping")
    region = catalog.region("eu-west-2")
    probe = HttpProbe(client=httpx.AsyncClient(transport=httpx.MockTransport(_transport(status))))
    try:
        if ok:
            await probe(region)
        else:
            with pytest.raises(OSError, match="503"):
                await probe(region)
    finally:
        await probe.aclose()


@pytest.mark.anyio
async def test_check_all_says_why_a_probe_failed_and_keeps_catalog_order() -> None:
    catalog = default_catalog()
    regions = [catalog.region(name) for name in ("us-east-1", "eu-west-2", "us-west-2")]
    registry = HealthRegistry([r.name for r in regions], NO_JITTER)

    async def probe(region: object) -> None:
        name = getattr(region, "name", "")
        if name == "eu-west-2":
            raise ConnectionRefusedError("refused")
        if name == "us-west-2":
            await anyio.sleep(10)

    prober = HealthProber(registry, regions, probe, timeout_s=0.2)
    with anyio.fail_after(5):
        results = await prober.check_all()
    assert list(results) == ["us-east-1", "eu-west-2", "us-west-2"]
    assert results["us-east-1"].ok and results["us-east-1"].error == ""
    assert results["us-east-1"].target == "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert (results["eu-west-2"].ok, results["eu-west-2"].error) == (False, "ConnectionRefusedError: refused")
    assert results["us-west-2"].error == "no answer within 0.2 s"


def test_failure_descriptions_name_the_error() -> None:
    assert describe_failure(TimeoutError(), 1.5) == "no answer within 1.5 s"
    assert describe_failure(OSError("probe of x answered HTTP 503"), 1.5) == "OSError: probe of x answered HTTP 503"
    assert describe_failure(httpx.ConnectError(""), 1.5) == "ConnectError"

"""RoutingService: residency per call, the sticky per-call router, settings and the merged health view."""

from __future__ import annotations

from pathlib import Path

import pytest

from aybiza.config import Settings
from aybiza.errors import ConfigError
from aybiza.routing.health import HealthState
from aybiza.routing.router import ResidencyRefused
from aybiza.routing.service import RoutingService, endpoint_catalog

UK = "+447700900123"
US = "+12025550123"
SG = "+6561234567"
BR = "+5511912345678"


@pytest.mark.parametrize(
    ("caller", "residency", "regions"),
    [
        (UK, None, ("eu-west-2", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1")),
        (UK, "US", ("us-east-1", "us-west-2")),
        (US, "EU", ("eu-west-2", "eu-central-1")),
        (US, "eu", ("eu-west-2", "eu-central-1")),
        (UK, "APAC", ("ap-southeast-1",)),
        (SG, "caller", ("ap-southeast-1",)),
        (US, "caller", ("us-east-1", "us-west-2")),
        (UK, "caller", ("eu-west-2", "eu-central-1")),
    ],
)
def test_route_call_applies_the_agents_residency(caller: str, residency: str | None, regions: tuple[str, ...]) -> None:
    assert RoutingService().route_call(caller, residency=residency).regions == regions


def test_route_call_refuses_rather_than_leave_the_zone() -> None:
    service = RoutingService()
    for _ in range(2):
        service.health.record_probe("ap-southeast-1", False)
    with pytest.raises(ResidencyRefused, match=r"inside APAC residency for \+447700900123"):
        service.route_call(UK, residency="APAC")
    with pytest.raises(ResidencyRefused, match=r"\+5511912345678 from BR is in no residency zone"):
        service.route_call(BR, residency="caller")
    assert service.route_call(BR).region == "us-east-1"  # no rule: routed freely
    with pytest.raises(ConfigError, match="unknown residency"):
        service.route_call(UK, residency="Mars")


def test_call_routing_is_sticky_and_keeps_the_residency() -> None:
    service = RoutingService()
    routing = service.call_routing(UK, residency="US", tier="premium")
    assert routing.policy.residency == "US"
    first = routing.next_turn(service.snapshot())
    assert (first.region, first.tier, first.residency_zone) == ("us-east-1", "premium", "US")
    for _ in range(2):
        service.health.record_probe("us-east-1", False)
    assert service.snapshot().regions["us-east-1"].state is HealthState.UNHEALTHY
    assert routing.next_turn(service.snapshot()).region == "us-west-2"
    for _ in range(3):
        service.health.record_probe("us-east-1", True)
    # back, but the call stays put until us-east-1 has won three turns in a row
    regions = [routing.next_turn(service.snapshot()).region for _ in range(3)]
    assert regions == ["us-west-2", "us-west-2", "us-east-1"]
    for _ in range(2):
        service.health.record_probe("us-east-1", False)
        service.health.record_probe("us-west-2", False)
    with pytest.raises(ResidencyRefused):
        routing.next_turn(service.snapshot())


def test_from_settings_points_every_endpoint_and_probe_at_the_override(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "regions:\n"
        "  eu-west-2: {zone: EU, country: GB, continent: EU, tiers: [fast], probe_url: 'https://probe.example/ping',\n"
        "              bedrock_endpoint: 'https://bedrock-runtime.eu-west-2.amazonaws.com',\n"
        "              deepgram_endpoint: 'https://api.eu.deepgram.com'}\n"
        "  us-east-1: {zone: US, country: US, continent: NA, tiers: [fast, premium],\n"
        "              bedrock_endpoint: 'https://bedrock-runtime.us-east-1.amazonaws.com',\n"
        "              deepgram_endpoint: 'https://api.deepgram.com'}\n"
    )
    settings = Settings(catalog_path=catalog, bedrock_endpoint_url="http://127.0.0.1:4010",
                        model_overrides={"fast": "anthropic.test-model"}, thinking_budget=2048)
    service = RoutingService.from_settings(settings)
    assert service.catalog.names == ("eu-west-2", "us-east-1")
    for region in service.catalog.regions:
        assert (region.bedrock_url, region.probe_target) == ("http://127.0.0.1:4010", "http://127.0.0.1:4010")
    assert service.model_for("eu-west-2", quality_tier="medium", language="en").model_id == "eu.anthropic.test-model"
    assert service.thinking_budget == 2048
    assert service.shared is None


def test_without_an_override_the_catalog_endpoints_stand() -> None:
    service = RoutingService.from_settings(Settings(catalog_path=None, bedrock_endpoint_url=""))
    region = service.catalog.region("eu-west-2")
    assert region.endpoint_url is None
    assert region.probe_target == "https://bedrock-runtime.eu-west-2.amazonaws.com"
    assert endpoint_catalog(service.catalog, "") is service.catalog


def test_the_environment_variable_is_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://proxy.internal:8080/")
    service = RoutingService.from_settings(Settings())
    assert {region.probe_target for region in service.catalog.regions} == {"http://proxy.internal:8080"}
    assert {region.bedrock_url for region in service.catalog.regions} == {"http://proxy.internal:8080/"}

"""The region catalog is data: the shipped one matches the design, bad files say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aybiza.errors import ConfigError
from aybiza.routing.regions import Placement, default_catalog, load_catalog, parse_catalog


def test_default_catalog_has_the_five_regions_with_the_design_tiers() -> None:
    catalog = default_catalog()
    assert catalog.names == ("us-east-1", "eu-west-2", "us-west-2", "eu-central-1", "ap-southeast-1")
    everything = ("premium", "advanced", "fast", "economy")
    assert catalog.region("us-east-1").tiers == everything
    assert catalog.region("eu-west-2").tiers == everything
    assert catalog.region("us-west-2").tiers == ("advanced", "fast")
    assert catalog.region("eu-central-1").tiers == ("advanced", "fast")
    assert catalog.region("ap-southeast-1").tiers == ("economy",)
    assert [r.name for r in catalog.regions if r.primary] == ["us-east-1", "eu-west-2"]


def test_default_catalog_endpoints_and_zones() -> None:
    catalog = default_catalog()
    euw2 = catalog.region("eu-west-2")
    assert euw2.zone == "EU"
    assert euw2.bedrock_url == "https://bedrock-runtime.eu-west-2.amazonaws.com"
    assert euw2.deepgram_endpoint == "https://api.eu.deepgram.com"
    assert catalog.region("us-east-1").deepgram_endpoint == "https://api.deepgram.com"
    assert catalog.region("ap-southeast-1").zone == "APAC"


def test_default_catalog_priors_are_the_measured_rtts() -> None:
    catalog = default_catalog()
    row = {name: catalog.prior_rtt_ms("us-east", name) for name in catalog.names}
    assert row == {"us-east-1": 5, "eu-west-2": 78, "us-west-2": 64, "eu-central-1": 93, "ap-southeast-1": 219}


def test_placement_falls_back_from_area_to_country_to_continent_to_default() -> None:
    catalog = default_catalog()
    assert catalog.placement("US", "west") == Placement("us-west", ("us-west-2", "us-east-1"))
    assert catalog.placement("US") == Placement("us-east", ("us-east-1", "us-west-2"))
    assert catalog.placement("gb").preference == ("eu-west-2", "eu-central-1")
    assert catalog.placement("ES").preference == ("eu-central-1", "eu-west-2")  # continent EU
    assert catalog.placement("ZZ") == catalog.default


def test_endpoint_override_changes_bedrock_url_and_probe() -> None:
    catalog = default_catalog().with_endpoints({"eu-west-2": "http://10.0.0.2:80"}, probe_path="/ping")
    region = catalog.region("eu-west-2")
    assert region.bedrock_url == "http://10.0.0.2:80"
    assert region.probe_target == "http://10.0.0.2:80/ping"
    assert catalog.region("us-east-1").bedrock_url.startswith("https://bedrock-runtime.us-east-1")


def test_load_catalog_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(_minimal()))
    catalog = load_catalog(path)
    assert catalog.names == ("r1",)
    assert catalog.region("r1").capacity == 7


def _minimal() -> dict[str, Any]:
    return {
        "regions": {
            "r1": {
                "zone": "EU",
                "country": "de",
                "continent": "EU",
                "primary": True,
                "bedrock_endpoint": "https://example.invalid",
                "deepgram_endpoint": "https://dg.invalid",
                "tiers": ["fast"],
                "capacity": 7,
            },
        },
        "edges": {"e": {"r1": 3}},
        "countries": {"DE": {"edge": "e", "preference": ["r1"]}},
    }


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["regions"]["r1"].update(zone="MARS"), "zone"),
        (lambda d: d["regions"]["r1"].update(tiers=["ultra"]), "unknown tier 'ultra'"),
        (lambda d: d["regions"]["r1"].update(tiers=[]), "tiers is empty"),
        (lambda d: d["regions"]["r1"].update(capacity=0), "capacity"),
        (lambda d: d["regions"]["r1"].pop("bedrock_endpoint"), "bedrock_endpoint"),
        (lambda d: d["countries"]["DE"].update(preference=["r9"]), "unknown region 'r9'"),
        (lambda d: d["countries"]["DE"].update(edge="nowhere"), "unknown edge"),
        (lambda d: d["edges"]["e"].update(r9=4), "unknown region 'r9'"),
        (lambda d: d.update(regions={}), "empty"),
    ],
)
def test_bad_catalogs_name_the_problem(mutate: Any, message: str) -> None:
    data = _minimal()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_catalog(data)


def test_unreadable_or_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(bad)


def test_unknown_region_lookup_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown region"):
        default_catalog().region("mars-north-1")

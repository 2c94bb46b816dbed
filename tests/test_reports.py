"""The command-line reports: routes (with live probes), scenarios, call costs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest

from aybiza.cli import main
from aybiza.config import Settings
from aybiza.edge.calls import open_call_store
from aybiza.errors import EndReason
from aybiza.pipeline import CallContext
from aybiza.reports import calls_report, costs_report, route_report, scenario_report
from aybiza.routing.costs import cost_of
from aybiza.testing.processes import free_port

UK = "+447700900123"
OFFLINE = Settings(bedrock_endpoint_url="", catalog_path=None, health_probes=True)


class RegionStub:
    """A local HTTP server standing in for a region's endpoint: answers every GET with 200, counts them."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def stub() -> Iterator[RegionStub]:
    server = RegionStub()
    yield server
    server.close()


def write_catalog(path: Path, endpoints: dict[str, str]) -> Path:
    """A catalog of some of the packaged regions, each at a local endpoint."""
    facts = {
        "eu-west-2": ("EU", "GB", "EU", "true", "[premium, advanced, fast, economy]"),
        "eu-central-1": ("EU", "DE", "EU", "false", "[advanced, fast]"),
        "ap-southeast-1": ("APAC", "SG", "AS", "false", "[economy]"),
    }
    lines = ["regions:"]
    for name, url in endpoints.items():
        zone, country, continent, primary, tiers = facts[name]
        lines += [
            f"  {name}:",
            f"    {{zone: {zone}, country: {country}, continent: {continent}, primary: {primary}, tiers: {tiers},",
            f"     bedrock_endpoint: https://bedrock-runtime.{name}.amazonaws.com, endpoint_url: '{url}',",
            "     deepgram_endpoint: https://api.eu.deepgram.com}",
        ]
    lines += ["countries:", f"  GB: {{preference: [{', '.join(n for n in endpoints if n.startswith('eu-'))}]}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def table_rows(text: str) -> dict[str, str]:
    """The score table's rows by region (the lines after the table header)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("region "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows[line.split()[0]] = line
    return rows


def test_route_of_a_uk_caller_lands_in_london_with_ordered_fallbacks() -> None:
    text = route_report(OFFLINE, UK, probe=False)
    assert "eu-west-2" in text.split("<- chosen")[0].splitlines()[-1]
    assert "fallbacks: eu-central-1" in text


def test_an_eu_residency_policy_keeps_a_german_caller_in_the_eu() -> None:
    text = route_report(OFFLINE, "+4915112345678", residency="EU", probe=False)
    assert "choice:    eu-central-1" in text
    assert "fallbacks: eu-west-2" in text and "us-east-1" not in text.split("fallbacks:")[1]


def test_the_report_probes_each_region_and_says_how_it_answered(tmp_path: Path, stub: RegionStub) -> None:
    dead = refused_url()
    catalog = write_catalog(tmp_path / "catalog.yaml", {"eu-west-2": dead, "eu-central-1": stub.url})
    text = route_report(Settings(catalog_path=catalog, bedrock_endpoint_url=""), UK)
    probes = text.split("\n\n")[0].splitlines()
    assert probes[0].startswith("Probed 2 region(s) once (timeout 1.5 s")
    assert probes[1].startswith("  eu-west-2     failed: ConnectError") and probes[1].endswith(f"({dead})")
    assert probes[2].startswith("  eu-central-1  ok in ") and probes[2].endswith(f" ms  ({stub.url})")
    assert stub.hits == ["/"]
    rows = table_rows(text)
    assert rows["eu-central-1"].split()[2] == "healthy" and rows["eu-central-1"].endswith("<- chosen")
    assert rows["eu-west-2"].split()[2] == "unhealthy" and rows["eu-west-2"].endswith("unhealthy")
    assert "choice:    eu-central-1 (first healthy region in the preference list" in text


def test_the_endpoint_override_takes_every_probe(stub: RegionStub) -> None:
    text = route_report(Settings(bedrock_endpoint_url=stub.url, catalog_path=None), UK)
    assert text.startswith(f"Endpoint override for every region: {stub.url}\n")
    probes = [line for line in text.splitlines() if line.startswith("  ")]
    assert len(probes) == 5 and all(" ok in " in line and line.endswith(f"({stub.url})") for line in probes)
    assert "amazonaws" not in text and len(stub.hits) == 5
    assert {row.split()[2] for row in table_rows(text).values()} == {"healthy"}


def test_regions_not_probed_are_unknown_never_healthy(tmp_path: Path, stub: RegionStub) -> None:
    catalog = write_catalog(tmp_path / "catalog.yaml", {"eu-west-2": stub.url, "eu-central-1": stub.url})
    for settings, probe, why in [
        (Settings(catalog_path=catalog, bedrock_endpoint_url=""), False, "--no-probe"),
        (Settings(catalog_path=catalog, bedrock_endpoint_url="", health_probes=False), True,
         "AYBIZA_HEALTH_PROBES is off"),
    ]:
        text = route_report(settings, UK, probe=probe)
        assert text.startswith(f"Regions not probed ({why}): their health is unknown")
        assert {row.split()[2] for row in table_rows(text).values()} == {"unknown"}
    assert stub.hits == []


def test_a_residency_refusal_is_reported_with_the_scores(tmp_path: Path, stub: RegionStub) -> None:
    catalog = write_catalog(tmp_path / "catalog.yaml", {"eu-west-2": stub.url, "ap-southeast-1": refused_url()})
    text = route_report(Settings(catalog_path=catalog, bedrock_endpoint_url=""), UK, residency="APAC")
    assert "residency refused: no eligible region inside APAC residency for +447700900123 from GB" in text
    rows = table_rows(text)
    assert rows["ap-southeast-1"].endswith("unhealthy") and rows["eu-west-2"].endswith("outside APAC residency")


def test_the_design_scenario_reproduces_the_design_figures() -> None:
    text = scenario_report(Settings())
    assert "$6,070.00" in text and "$8,500.00" in text and "(28.6 %)" in text


def test_costs_and_calls_read_the_archive(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    async def one_call() -> None:
        store = await open_call_store(tmp_path)
        ctx = CallContext(call_id="CAcost", caller="+447700900123", region="eu-west-2")
        ctx.ledger.add_tokens("eu.anthropic.claude-haiku-4-5-20251001-v1:0", 1000, 100)
        ctx.ledger.answered("eu.anthropic.claude-haiku-4-5-20251001-v1:0")
        ctx.ledger.add_stt("nova-3", 30.0)
        ctx.ledger.add_audio(60.0)
        ctx.ledger.add_gated(30.0)
        cost = cost_of(ctx.ledger.usage(), ctx.region, 1.0)
        await store.start_call(ctx)
        await store.end_call(ctx, EndReason.HANGUP.value, cost=cost.to_dict())
        await store.aclose()

    anyio.run(one_call)
    calls = calls_report(settings)
    assert "CAcost" in calls and "hangup" in calls
    costs = costs_report(settings)
    assert "eu-west-2" in costs and "haiku" in costs
    measured = scenario_report(settings, measured=True)  # the archived typed usage feeds the scenario
    assert "Hybrid saves" in measured and measured != scenario_report(settings)


def test_the_route_command_reads_the_settings_and_probes(
    tmp_path: Path, stub: RegionStub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = write_catalog(tmp_path / "catalog.yaml", {"eu-west-2": stub.url, "eu-central-1": stub.url})
    monkeypatch.setenv("AYBIZA_CATALOG_PATH", str(catalog))
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)
    monkeypatch.delenv("AYBIZA_BEDROCK_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AYBIZA_HEALTH_PROBES", raising=False)
    assert main(["route", "--from", UK]) == 0
    out = capsys.readouterr().out
    assert "Probed 2 region(s)" in out and "<- chosen" in out and len(stub.hits) == 2
    assert main(["route", "--from", "+5511912345678", "--residency", "caller", "--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "is in no residency zone" in out and len(stub.hits) == 2
    monkeypatch.setenv("AYBIZA_CATALOG_PATH", str(tmp_path / "missing.yaml"))
    assert main(["route", "--from", UK, "--no-probe"]) == 2
    assert "cannot read region catalog" in capsys.readouterr().err

"""Tests for the shipped Prometheus alert rules and Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import aybiza.observability
from aybiza.observability.metrics import Metrics

PACKAGE = Path(aybiza.observability.__file__).parent
ALERTS = PACKAGE / "prometheus" / "alerts.yml"
DASHBOARD = PACKAGE / "grafana" / "aybiza.json"
METRIC = re.compile(r"\baybiza_[a-zA-Z0-9_]+")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install the Debian package `prometheus` (apt-get install prometheus)",
)


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(ALERTS), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_the_four_design_alerts_are_there() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == {
        "AybizaHighEdgeLatency",
        "AybizaLowCacheHitRatio",
        "AybizaRegionUnhealthy",
        "AybizaHighErrorRate",
    }
    assert "> 0.05" in rules["AybizaHighEdgeLatency"]["expr"]
    assert "< 0.8" in rules["AybizaLowCacheHitRatio"]["expr"]
    assert "== 0" in rules["AybizaRegionUnhealthy"]["expr"]
    assert "> 0.05" in rules["AybizaHighErrorRate"]["expr"]
    assert {rule["labels"]["severity"] for rule in rules.values()} == {"warning", "critical"}


def expected_annotations(alertname: str, labels: dict[str, str]) -> dict[str, str]:
    (rule,) = [r for r in alert_rules() if r["alert"] == alertname]
    return {
        key: re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)
        for key, text in rule["annotations"].items()
    }


def alert(alertname: str, **labels: str) -> dict[str, Any]:
    all_labels = dict(labels)
    (rule,) = [r for r in alert_rules() if r["alert"] == alertname]
    all_labels.update(rule["labels"])
    return {"exp_labels": all_labels, "exp_annotations": expected_annotations(alertname, labels)}


@needs_promtool
def test_alerts_fire_on_bad_numbers_and_stay_quiet_on_good_ones(tmp_path: Path) -> None:
    # promtool's rule unit tests: series in, alerts expected at given times.
    edge = "aybiza_edge_frame_seconds_bucket"
    cache = "aybiza_cache_requests_total"
    tests = [
        {  # p95 edge time ~ 97 ms on i1, ~ 0.1 ms on i2
            "interval": "1m",
            "input_series": [
                {"series": f'{edge}{{instance="i1",le="0.05"}}', "values": "0+0x30"},
                {"series": f'{edge}{{instance="i1",le="0.1"}}', "values": "0+100x30"},
                {"series": f'{edge}{{instance="i1",le="+Inf"}}', "values": "0+100x30"},
                {"series": f'{edge}{{instance="i2",le="0.0001"}}', "values": "0+100x30"},
                {"series": f'{edge}{{instance="i2",le="0.05"}}', "values": "0+100x30"},
                {"series": f'{edge}{{instance="i2",le="+Inf"}}', "values": "0+100x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "AybizaHighEdgeLatency", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "AybizaHighEdgeLatency",
                 "exp_alerts": [alert("AybizaHighEdgeLatency", instance="i1")]},
            ],
        },
        {  # 70 % hits, then 90 % hits
            "interval": "1m",
            "input_series": [
                {"series": f'{cache}{{namespace="agent",result="hit"}}', "values": "0+70x30 2170+90x30"},
                {"series": f'{cache}{{namespace="agent",result="miss"}}', "values": "0+30x30 930+10x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": "AybizaLowCacheHitRatio",
                 "exp_alerts": [alert("AybizaLowCacheHitRatio")]},
                {"eval_time": "55m", "alertname": "AybizaLowCacheHitRatio", "exp_alerts": []},
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": 'aybiza_region_health{region="eu-west-2"}', "values": "2 2 0 0 0 0 0"},
                {"series": 'aybiza_region_health{region="us-east-1"}', "values": "2 1 1 1 1 1 1"},
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "AybizaRegionUnhealthy", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "AybizaRegionUnhealthy",
                 "exp_alerts": [alert("AybizaRegionUnhealthy", region="eu-west-2")]},
            ],
        },
        {  # 10 of 100 calls end on a failure, then 1 of 100 (both counted at the call's end)
            "interval": "1m",
            "input_series": [
                {"series": 'aybiza_errors_total{kind="model_unavailable"}', "values": "0+10x30 300+1x30"},
                {"series": 'aybiza_calls_total{country="US",region="us-east-1",model="m"}',
                 "values": "0+100x60"},
            ],
            "alert_rule_test": [
                {"eval_time": "15m", "alertname": "AybizaHighErrorRate",
                 "exp_alerts": [alert("AybizaHighErrorRate")]},
                {"eval_time": "50m", "alertname": "AybizaHighErrorRate", "exp_alerts": []},
            ],
        },
    ]  # fmt: skip
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}))
    result = promtool("test", "rules", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no "check expression"; recording rules parse the same PromQL.
    exprs = [
        e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "1m")
        for e in dashboard_exprs()
    ]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"aybiza:dashboard_query_{i}", "expr": expr} for i, expr in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_in_the_files_exists_in_the_registry() -> None:
    known = Metrics().metric_names()
    used: set[str] = set()
    for expr in [rule["expr"] for rule in alert_rules()] + dashboard_exprs():
        names = set(METRIC.findall(expr))
        assert names, f"no aybiza metric in {expr!r}"
        used |= names
    assert used - known == set()


def test_every_exported_family_is_shown_or_alerted_on() -> None:
    def family(name: str) -> str:
        return re.sub(r"_(bucket|count|sum)$", "", name)

    used = {name for expr in [r["expr"] for r in alert_rules()] + dashboard_exprs() for name in METRIC.findall(expr)}
    assert {family(n) for n in Metrics().metric_names()} - {family(n) for n in used} == set()


def test_the_files_say_calls_are_counted_when_they_end() -> None:
    # aybiza_calls_total is counted at the end of a call (with the model that answered it),
    # and aybiza_errors_total counts calls that ended on a failure: the texts must not say "started".
    panels = {panel["title"]: panel for panel in dashboard()["panels"]}
    for title in ("Global request distribution", "Regional health", "Cost breakdown"):
        description = panels[title]["description"]
        assert "started" not in description and "end" in description, title
    (rule,) = [r for r in alert_rules() if r["alert"] == "AybizaHighErrorRate"]
    assert "started" not in rule["annotations"]["description"]
    assert "ended" in rule["annotations"]["description"]
    assert "started" not in ALERTS.read_text()


def test_dashboard_shows_the_incidents_calls_met() -> None:
    panels = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in dashboard()["panels"]}
    assert "sum by (kind) (increase(aybiza_incidents_total" in panels["Regional health"]


def test_dashboard_has_the_designs_five_panels() -> None:
    board = dashboard()
    titles = [panel["title"] for panel in board["panels"]]
    assert titles == [
        "Global request distribution",
        "Edge cache performance",
        "Regional health",
        "Voice processing latency",
        "Cost breakdown",
    ]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs)
    (variable,) = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"


def test_dashboard_panels_use_the_metrics_they_are_named_for() -> None:
    panels = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in dashboard()["panels"]}
    assert "aybiza_calls_total" in panels["Global request distribution"]
    assert "country" in panels["Global request distribution"]
    assert "aybiza_cache_requests_total" in panels["Edge cache performance"]
    assert "aybiza_edge_frame_seconds_bucket" in panels["Edge cache performance"]
    assert "aybiza_region_health" in panels["Regional health"]
    for stage in ("stt_final", "llm_first_token", "tts_first_byte", "voice_to_voice"):
        assert f"aybiza_{stage}_seconds_bucket" in panels["Voice processing latency"]
    assert "aybiza_call_cost_usd_total" in panels["Cost breakdown"]

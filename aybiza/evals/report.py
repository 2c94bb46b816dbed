"""The eval's outputs: a pass/fail table for people and a JSON document for machines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .runner import ScenarioResult

__all__ = ["as_json", "table", "write_json"]


def table(results: list[ScenarioResult]) -> str:
    """One line per check, then one per scenario, then the total."""
    rows = [("scenario", "turn", "check", "expected", "got", "")]
    for result in results:
        if result.error:
            rows.append((result.name, "", "call", "completed", result.error[:60], "FAIL"))
        for check in result.checks:
            rows.append((check.scenario, "" if check.turn is None else str(check.turn), check.check,
                         check.expected[:40], check.actual[:50].replace("\n", " "), "ok" if check.passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    for result in results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'}  {result.name}  ({result.seconds:.1f} s, call "
                     f"{result.call_id or '-'})")
    passed = sum(result.passed for result in results)
    lines.append(f"{passed}/{len(results)} scenarios passed")
    return "\n".join(lines) + "\n"


def as_json(results: list[ScenarioResult], *, source: str, server: str) -> dict[str, Any]:
    """The whole run."""
    return {"scenarios_file": source, "server": server, "passed": all(r.passed for r in results) and bool(results),
            "total": len(results), "failed": sum(not r.passed for r in results),
            "scenarios": [result.as_dict() for result in results]}


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the JSON report."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")

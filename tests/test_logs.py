"""Log lines: one event is one line whatever a peer sends; a flood of refusals is a line per interval."""

from __future__ import annotations

import json
import logging

from aybiza.logs import JsonFormatter, TextFormatter, Throttled


def _record(message: str, *args: object, call_id: str = "-") -> logging.LogRecord:
    record = logging.LogRecord("aybiza.calls", logging.WARNING, __file__, 1, message, args, None)
    record.call_id = call_id
    return record


def test_a_forged_line_in_a_peers_text_stays_on_its_line() -> None:
    forged = "CA1\n2026-01-01 12:00:00 INFO  aybiza.call [CA2] call ended: hangup\r\x1b[31m\u2028"
    line = TextFormatter().format(_record("refused stream: %s", forged, call_id=forged))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "\\n2026-01-01" in line and "\\x1b" in line  # shown escaped, not dropped


def test_json_lines_escape_them_already() -> None:
    line = JsonFormatter().format(_record("refused: %s", "a\nb"))
    assert "\n" not in line and json.loads(line)["msg"] == "refused: a\nb"


def test_a_flood_of_refusals_is_one_line_per_interval_with_a_count() -> None:
    now = [0.0]
    logger = logging.getLogger("aybiza.test.throttled")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    logger.propagate = False
    throttled = Throttled(logger, interval_s=10, clock=lambda: now[0])
    for n in range(1000):
        now[0] = n * 0.01
        throttled.warning("offers", "refused an offer from %s", "203.0.113.9")
    now[0] = 10.5
    throttled.warning("offers", "refused an offer from %s", "203.0.113.9")
    throttled.warning("other", "something else")
    assert lines == ["refused an offer from 203.0.113.9",
                     "refused an offer from 203.0.113.9 (999 more like it in the last 10 s)",
                     "something else"]

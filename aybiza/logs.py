"""Structured logging: one line per event, the call id on every line.

``configure`` is called once by the CLI; importing this module changes
nothing. Records carry ``call_id`` (``-`` outside a call) so a grep for a
call id shows the whole call. Text lines never carry a raw control character
(a newline from a peer would forge a line); :class:`Throttled` keeps a flood
of refusals to one line per interval with a count.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable

from .pipeline.pii import RedactingFilter

__all__ = ["configure", "JsonFormatter", "TextFormatter", "Throttled"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = "-"
        return True


class JsonFormatter(logging.Formatter):
    """JSON lines: ts, level, logger, call_id, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "call_id": getattr(record, "call_id", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the call id in brackets; control characters are escaped (one event, one line)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s [%(call_id)s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escape, record.message)
        call_id = getattr(record, "call_id", "-")
        if isinstance(call_id, str) and _CONTROL.search(call_id):
            record.call_id = _CONTROL.sub(_escape, call_id)
        return super().formatMessage(record)


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class Throttled:
    """Log the first of a kind of event at once, then at most one line per ``interval_s`` saying how many more."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, what: str, message: str, *args: object) -> None:
        """Log ``message`` for an event of kind ``what`` unless one was logged in the last interval."""
        now = self._clock()
        last = self._last.get(what)
        if last is not None and now - last < self.interval_s:
            self._suppressed[what] = self._suppressed.get(what, 0) + 1
            return
        self._last[what] = now
        more = self._suppressed.pop(what, 0)
        suffix = f" ({more} more like it in the last {now - last:.0f} s)" if more and last is not None else ""
        self.logger.warning(message + suffix, *args)


def configure(level: str = "INFO", fmt: str = "text", *, redact_pii: bool = False) -> None:
    """Install one stderr handler on the ``aybiza`` logger tree (masking personal data with ``redact_pii``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CallIdFilter())
    if redact_pii:  # PII redaction (issue 14, item 5): card numbers, phone numbers, emails
        handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("aybiza")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = [handler]
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

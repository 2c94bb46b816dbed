"""Structured logging: one line per event, the call id on every line.

``configure`` is called once by the CLI; importing this module changes
nothing. Records carry ``call_id`` (``-`` outside a call) so a grep for a
call id shows the whole call.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["configure", "JsonFormatter", "TextFormatter"]


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
    """Human-readable lines with the call id in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s [%(call_id)s] %(message)s")


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Install one stderr handler on the ``aybiza`` logger tree."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CallIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("aybiza")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = [handler]
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

"""The console's page frame: one stylesheet and one script from our own static directory, nothing inline.

So the pages run under the strictest policy, :data:`CONSOLE_CSP`: everything
from this origin only, no inline script or style (SVG presentation
attributes are not styles), forms submit only here.
"""

from __future__ import annotations

import datetime as dt
from html import escape

__all__ = ["CONSOLE_CSP", "STATIC_PATH", "format_duration", "format_time", "layout"]

STATIC_PATH = "/console/static"
"""Where the console's stylesheet and script are served."""

CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
"""The console pages' Content-Security-Policy."""

_DASH = "\u2013"


def format_time(epoch: float | None) -> str:
    """A wall-clock time in UTC (``2026-12-04 14:08:06``), or a dash."""
    if epoch is None:
        return _DASH
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    """``42.1 s`` or ``3 min 05 s``."""
    if seconds is None:
        return _DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def layout(title: str, body: str, *, script: bool = False) -> str:
    """A complete page: the console's navigation, ``body``, and its script when the page needs it."""
    tag = f'<script src="{STATIC_PATH}/console.js" defer></script>' if script else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · aybiza console</title>
<link rel="stylesheet" href="{STATIC_PATH}/console.css">
{tag}
</head>
<body>
<nav><a href="/calls">Calls</a> <a href="/dashboard">Dashboard</a></nav>
{body}
</body>
</html>
"""

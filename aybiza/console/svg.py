"""Small server-rendered SVG charts: bars, horizontal bars, lines with points.

Why not a charting library: the pages are served under CSP ``default-src
'self'`` with no CDN, must show their numbers without JavaScript, and need
four kinds of picture. A few functions that emit SVG text do that with no
dependency. Every mark carries its value as text (a label, or a ``<title>``
the browser shows on hover), and no ``style`` attribute is used (the CSP
forbids inline styles): colours are presentation attributes or classes from
the console's stylesheet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart", "hbar_chart", "line_chart", "nice_max"]

PALETTE = ("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
"""Series colours, readable on light and dark backgrounds."""


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above ``value`` (a round axis top)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _open(width: int, height: int, label: str, css: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {escape(css)}" role="img" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-label="{escape(label)}">'
            f"<title>{escape(label)}</title>")


def _empty(width: int, height: int, label: str, css: str, message: str) -> str:
    return (_open(width, height, label, css)
            + f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" class="empty">'
            f"{escape(message)}</text></svg>")


def bar_chart(items: Sequence[tuple[str, float]], *, label: str, fmt: Callable[[float], str] = str,
              width: int = 420, height: int = 200, css: str = "bars") -> str:
    """Vertical bars, one per ``(name, value)``, each with its value written above it."""
    if not items:
        return _empty(width, height, label, css, "no data yet")
    top = nice_max(max(value for _, value in items))
    left, bottom, pad = 8, 28, 18
    slot = (width - left * 2) / len(items)
    bar = max(2.0, slot * 0.7)
    parts = [_open(width, height, label, css)]
    plot = height - bottom - pad
    for index, (name, value) in enumerate(items):
        h = plot * value / top
        x = left + index * slot + (slot - bar) / 2
        y = pad + plot - h
        parts.append(
            f'<g class="bar" data-name="{escape(name)}" data-value="{value:g}">'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{PALETTE[0]}">'
            f"<title>{escape(name)}: {escape(fmt(value))}</title></rect>"
            f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" class="value">'
            f"{escape(fmt(value))}</text>"
            f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 14:.1f}" text-anchor="middle" class="name">'
            f"{escape(name)}</text></g>")
    parts.append(f'<line x1="{left}" x2="{width - left}" y1="{pad + plot}" y2="{pad + plot}" class="axis"/>')
    parts.append("</svg>")
    return "".join(parts)


def hbar_chart(items: Sequence[tuple[str, float]], *, label: str, fmt: Callable[[float], str] = str,
               width: int = 420, row: int = 22, name_w: int = 150, css: str = "hbars") -> str:
    """Horizontal bars, one row per ``(name, value)``: name on the left, value on the right of its bar."""
    height = max(60, row * len(items) + 10)
    if not items:
        return _empty(width, height, label, css, "no data yet")
    top = max(value for _, value in items) or 1.0
    value_w = 90
    span = width - name_w - value_w
    parts = [_open(width, height, label, css)]
    for index, (name, value) in enumerate(items):
        y = 5 + index * row
        w = max(1.0, span * value / top)
        parts.append(
            f'<g class="bar" data-name="{escape(name)}" data-value="{value:g}">'
            f'<text x="{name_w - 6}" y="{y + row * 0.65:.1f}" text-anchor="end" class="name">'
            f"{escape(name[:name_w // 6])}</text>"
            f'<rect x="{name_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="{PALETTE[index % len(PALETTE)]}">'
            f"<title>{escape(name)}: {escape(fmt(value))}</title></rect>"
            f'<text x="{name_w + w + 4:.1f}" y="{y + row * 0.65:.1f}" class="value">{escape(fmt(value))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float | None]]]], *, label: str,
               x_range: tuple[float, float], fmt: Callable[[float], str] = str,
               x_fmt: Callable[[float], str] = str, width: int = 260, height: int = 130,
               y_max: float | None = None, css: str = "lines") -> str:
    """Lines of ``(x, y)`` points over ``x_range`` (None: a gap), each point with its value as a ``<title>``;
    the axis top and the last value of each series are written out."""
    points = [y for _, values in series for _, y in values if y is not None]
    if not points:
        return _empty(width, height, label, css, "no data in this window")
    top = y_max if y_max is not None else nice_max(max(points))
    left, right, pad, bottom = 44, 8, 10, 18
    plot_w, plot_h = width - left - right, height - pad - bottom
    x0, x1 = x_range
    span = (x1 - x0) or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return left + plot_w * (x - x0) / span, pad + plot_h * (1 - min(y, top) / top)

    legend = "".join(f'<text x="{width - right - 60 * (len(series) - i - 1)}" y="{pad + 8}" text-anchor="end" '
                     f'fill="{PALETTE[i % len(PALETTE)]}" class="legend">{escape(name)}</text>'
                     for i, (name, _) in enumerate(series)) if len(series) > 1 else ""
    parts = [_open(width, height, label, css), legend,
             f'<line x1="{left}" x2="{width - right}" y1="{pad + plot_h}" y2="{pad + plot_h}" class="axis"/>',
             f'<line x1="{left}" x2="{left}" y1="{pad}" y2="{pad + plot_h}" class="axis"/>',
             f'<text x="{left - 4}" y="{pad + 8}" text-anchor="end" class="tick">{escape(fmt(top))}</text>',
             f'<text x="{left - 4}" y="{pad + plot_h}" text-anchor="end" class="tick">0</text>',
             f'<text x="{left}" y="{height - 4}" class="tick">{escape(x_fmt(x0))}</text>',
             f'<text x="{width - right}" y="{height - 4}" text-anchor="end" class="tick">{escape(x_fmt(x1))}</text>']
    for index, (name, values) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        for x, y in values:
            if y is None:
                runs.append([])
            else:
                runs[-1].append(at(x, y))
        parts.append(f'<g class="series" data-series="{escape(name)}">')
        for run in runs:
            if len(run) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for x, y in values:
            if y is not None:
                px, py = at(x, y)
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}" data-value="{y:g}">'
                             f"<title>{escape(name)} at {escape(x_fmt(x))}: {escape(fmt(y))}</title></circle>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)

"""Two chart shapes as inline SVG, drawn in Python: stacked bars over days, and signed horizontal bars.

No script and no external resource: the report stays one self-contained file that renders offline.
Every value is escaped; every bar carries a ``<title>`` (the browser's tooltip) with its figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from ._money import format_usd

__all__ = ["PALETTE", "nice_ceiling", "signed_bars", "stacked_bars"]

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")
"""Tableau 10's first colours: distinct, and readable by most colour-blind readers."""
_AXIS = "#555"
_GRID = "#ddd"
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (a readable axis maximum)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * base >= value * (1 - 1e-12):
            return step * base
    return 10 * base  # pragma: no cover - the loop ends at 10 x base


def _text(x: float, y: float, content: str, *, anchor: str = "start", fill: str = _AXIS) -> str:
    """An SVG text element; ``content`` is escaped."""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}">{escape(content)}</text>'


def _label_every(n: int, most: int = 12) -> int:
    return max(1, math.ceil(n / most))


def stacked_bars(
    chart_id: str,
    days: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    width: int = 760,
    height: int = 300,
    fmt: Callable[[float], str] = format_usd,
) -> str:
    """One bar per day, stacked by series ``(name, colour, values per day)``; a y axis in ``fmt``."""
    left, right, top, bottom = 72, 12, 12, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s[2][i] for s in series) for i in range(len(days))]
    top_value = nice_ceiling(max(totals, default=0.0))
    parts = [
        f'<svg id="{escape(chart_id)}-svg" class="plot" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT}>'
    ]
    for i in range(5):  # grid and y labels at 0, 25, 50, 75, 100 %
        v = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        parts.append(_text(left - 6, y + 4, fmt(v), anchor="end"))
    band = plot_w / max(1, len(days))
    bar_w = max(2.0, band * 0.7)
    every = _label_every(len(days))
    for i, day in enumerate(days):
        x = left + band * i + (band - bar_w) / 2
        y = top + plot_h
        for name, colour, values in series:
            v = values[i]
            if v <= 0:
                continue
            h = plot_h * v / top_value
            y -= h
            tip = escape(f"{day} · {name}: {fmt(v)}")
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colour}"><title>{tip}</title></rect>'
            )
        if i % every == 0:
            cx = left + band * i + band / 2
            parts.append(_text(cx, top + plot_h + 16, day[5:] if len(day) == 10 else day, anchor="middle"))
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{_AXIS}"/>'
    )
    if days:
        span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]} (UTC days)"
        parts.append(_text(left + plot_w / 2, height - 6, span, anchor="middle"))
    parts.append("</svg>")
    return "".join(parts)


def signed_bars(
    chart_id: str,
    rows: Sequence[tuple[str, float | None, str]],
    *,
    width: int = 760,
    colours: tuple[str, str] = ("#76b7b2", "#e15759"),
) -> str:
    """One horizontal bar per ``(label, percent or None, note)`` from a zero line; ``colours`` = (+, -)."""
    left, right, row_h, top = 160, 300, 28, 10
    plot_w = width - left - right
    height = top * 2 + row_h * max(1, len(rows)) + 20
    scale = nice_ceiling(max((abs(p) for _, p, _ in rows if p is not None), default=0.0))
    zero = left + plot_w / 2
    parts = [
        f'<svg id="{escape(chart_id)}-svg" class="plot" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT}>'
    ]
    for frac in (-1.0, -0.5, 0.5, 1.0):
        x = zero + plot_w / 2 * frac
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 20}" stroke="{_GRID}"/>')
        parts.append(_text(x, height - 6, f"{scale * frac:+g}%", anchor="middle"))
    for i, (label, percent, note) in enumerate(rows):
        y = top + row_h * i
        parts.append(_text(left - 8, y + row_h / 2 + 4, label, anchor="end", fill="#222"))
        if percent is not None:
            w = plot_w / 2 * abs(percent) / scale
            x = zero if percent >= 0 else zero - w
            colour = colours[0] if percent >= 0 else colours[1]
            tip = escape(f"{label}: {percent:+.2f}% ({note})")
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 5}" width="{max(w, 1.5):.1f}" height="{row_h - 10}" '
                f'fill="{colour}"><title>{tip}</title></rect>'
            )
        text = note if percent is None else f"{percent:+.1f}% · {note}"
        parts.append(_text(left + plot_w + 8, y + row_h / 2 + 4, text))
    parts.append(_text(zero, height - 6, "0%", anchor="middle"))
    parts.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top}" y2="{height - 20}" stroke="{_AXIS}"/>')
    parts.append("</svg>")
    return "".join(parts)

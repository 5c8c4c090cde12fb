"""Small SVG line charts (step durations, pass rates over flights) and a metric's trend with its
change points, drawn server-side.

Plain SVG elements with presentation attributes (no script, no inline style), every text escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
)  # fmt: skip


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[int, float | None], ...]
    """(flight id, value); None where the flight has no value (a gap in the line)."""


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    y_max: float | None = None,
    width: int = 960,
    height: int = 240,
) -> str:
    """An SVG chart of the series against flight ids (evenly spaced, in order)."""
    left, right, top, bottom = 56, 170, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({x for s in series for x, _ in s.points})
    values = [v for s in series for _, v in s.points if v is not None]
    top_value = y_max if y_max is not None else _nice_max(max(values, default=0.0))
    pos = {x: left + (plot_w * i / max(1, len(xs) - 1)) for i, x in enumerate(xs)}

    def y_of(v: float) -> float:
        return top + plot_h - plot_h * min(v, top_value) / top_value

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):
        v = top_value * i / 4
        y = y_of(v)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e4e4e4"/><text x="{left - 4}" y="{y + 4:.1f}" font-size="10" '
            f'text-anchor="end">{escape(y_format(v))}</text>'
        )
    ticks = xs[:: max(1, len(xs) // 8)] if xs else []
    for x in ticks:
        out.append(
            f'<text x="{pos[x]:.1f}" y="{top + plot_h + 16}" font-size="10" '
            f'text-anchor="middle">{x}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    for index, s in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        segment: list[str] = []
        segments = [segment]
        for x, value in s.points:
            if value is None:
                segment = []
                segments.append(segment)
            else:
                segment.append(f"{pos[x]:.1f},{y_of(value):.1f}")
        for seg in segments:
            if len(seg) > 1:
                out.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                    f'points="{" ".join(seg)}"/>'
                )
            elif seg:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
        ly = top + 12 + 16 * index
        out.append(
            f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 28}" y1="{ly - 4}" '
            f'y2="{ly - 4}" stroke="{color}" stroke-width="3"/>'
            f'<text x="{left + plot_w + 32}" y="{ly}" font-size="11">{escape(s.name[:22])}</text>'
        )
    return _closed(out, not values, left + plot_w / 2, top + plot_h / 2)


def _closed(out: list[str], empty: bool, x: float, y: float) -> str:
    """The chart's SVG, with "no data" at (x, y) when it has none."""
    if empty:
        out.append(
            f'<text x="{x}" y="{y}" text-anchor="middle" font-size="12" fill="#888">no data</text>'
        )
    return "\n".join([*out, "</svg>"])


@dataclass(frozen=True)
class TrendPoint:
    """A flight's value; ``href`` is where its dot links (the flight's page)."""

    flight: int
    value: float
    title: str
    href: str


@dataclass(frozen=True)
class ChangeMarker:
    """A change point: ``flight`` is the first flight after the change; ``label`` is drawn
    beside the marker (``+19.6%``), ``title`` is its tooltip, ``href`` where it links."""

    flight: int
    label: str
    title: str
    href: str


def trend_chart(
    points: Sequence[TrendPoint],
    markers: Sequence[ChangeMarker],
    *,
    title: str,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    width: int = 960,
    height: int = 260,
) -> str:
    """An SVG chart of one metric over flights (evenly spaced, in order): a line through a dot
    per flight, each dot a link (class ``point``, ``data-flight``), and a dashed vertical line
    before each change point's flight, a link too (class ``change-point``). The y axis spans the
    values, not from 0: a 5% change must show."""
    left, right, top, bottom = 64, 24, 28, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    low = min((p.value for p in points), default=0.0)
    high = max((p.value for p in points), default=1.0)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    step = plot_w / max(1, len(points) - 1)
    pos = {p.flight: left + step * i for i, p in enumerate(points)}

    def y_of(v: float) -> float:
        return top + plot_h - plot_h * (v - low) / (high - low)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" font-size="12" font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):
        v = low + (high - low) * i / 4
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y_of(v):.1f}" y2="{y_of(v):.1f}" '
            f'stroke="#e4e4e4"/><text x="{left - 4}" y="{y_of(v) + 4:.1f}" font-size="10" '
            f'text-anchor="end">{escape(y_format(v))}</text>'
        )
    for p in points[:: max(1, len(points) // 10)]:
        out.append(
            f'<text x="{pos[p.flight]:.1f}" y="{top + plot_h + 16}" font-size="10" '
            f'text-anchor="middle">{p.flight}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    for m in markers:
        if m.flight not in pos:
            continue
        x = pos[m.flight] - step / 2
        out.append(
            f'<a class="change-point" href="{escape(m.href)}" data-flight="{m.flight}">'
            f"<title>{escape(m.title)}</title>"
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#d62728" '
            f'stroke-width="2" stroke-dasharray="5 3"/>'
            f'<text x="{x + 4:.1f}" y="{top + 12}" font-size="11" fill="#d62728">'
            f"{escape(m.label)}</text></a>"
        )
    if len(points) > 1:
        line = " ".join(f"{pos[p.flight]:.1f},{y_of(p.value):.1f}" for p in points)
        out.append(
            f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" points="{line}"/>'
        )
    for p in points:
        out.append(
            f'<a class="point" href="{escape(p.href)}" data-flight="{p.flight}">'
            f"<title>{escape(p.title)}</title>"
            f'<circle cx="{pos[p.flight]:.1f}" cy="{y_of(p.value):.1f}" r="4" '
            f'fill="{PALETTE[0]}"/></a>'
        )
    return _closed(out, not points, left + plot_w / 2, top + plot_h / 2)

"""Inline SVG plots, written by hand: no plotting library, no scripts, no fonts (text takes the page's font).

Each function returns one <svg> element (role="img", with a <title> and a <desc> that say in words what it
shows). Colours: the Okabe-Ito palette, distinguishable with the common colour-vision deficiencies; series are
also told apart by marker shape or dash, and every bar carries its value as text.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

# Okabe & Ito (2008), "Color Universal Design".
BLUE, ORANGE, GREEN, VERMILION, SKY, PURPLE, YELLOW = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442"
GREY, DARK, LIGHT, AXIS = "#8C8C8C", "#222222", "#F2F4F7", "#6B7280"
SERIES = (BLUE, VERMILION, GREEN, ORANGE, PURPLE, SKY)
STAGE_SHADES = ("#08306B", "#2171B5", "#6BAED6", "#C6DBEF", "#DEEBF7", "#F7FBFF")  # stage 0, 1, ... (dark to light)
PRECISION_COLOURS = {"fp32": BLUE, "fp16": ORANGE, "bf16": YELLOW, "int8": GREEN, "fp8": PURPLE, "int4": VERMILION,
                     "int32": SKY, "int64": SKY, "bool": GREY, "uint8": GREY, "unknown": "#D1D5DB"}
MARKERS = ("circle", "square", "diamond", "triangle")
FONT_PX = 12


def e(text: object) -> str:
    return escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks: list[float] = []
    v = start
    while v < hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(v, 12))
        v += step
    return ticks


def tick_label(v: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if step > 0 and abs(step * 10 ** digits - round(step * 10 ** digits)) > 1e-6:
        digits += 1
    return f"{v:.{digits}f}"


def _open(width: int, height: int, title: str, desc: str, cls: str) -> list[str]:
    head = (f'<svg class="plot {cls}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{e(title)}" font-size="{FONT_PX}">')
    return [head, f"<title>{e(title)}</title>", f"<desc>{e(desc)}</desc>"]


def _text(x: float, y: float, s: str, anchor: str = "start", fill: str = DARK, weight: str = "normal", size: int = FONT_PX,
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" font-weight="{weight}" '
            f'font-size="{size}"{extra}>{e(s)}</text>')


def _marker(kind: str, x: float, y: float, colour: str, r: float = 4.0) -> str:
    if kind == "square":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{colour}"/>'
    if kind == "diamond":
        pts = f"{x:.1f},{y - r * 1.3:.1f} {x + r * 1.3:.1f},{y:.1f} {x:.1f},{y + r * 1.3:.1f} {x - r * 1.3:.1f},{y:.1f}"
        return f'<polygon points="{pts}" fill="{colour}"/>'
    if kind == "triangle":
        pts = f"{x:.1f},{y - r * 1.3:.1f} {x + r * 1.2:.1f},{y + r:.1f} {x - r * 1.2:.1f},{y + r:.1f}"
        return f'<polygon points="{pts}" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{colour}"/>'


# ---------------------------------------------------------------- horizontal bars (latency, pruned vs dense)
@dataclass
class Segment:
    value: float
    label: str
    colour: str


@dataclass
class Bar:
    label: str
    segments: list[Segment]
    text: str  # written after the bar, e.g. "3.21 ms"
    hatched: bool = False


@dataclass
class BarGroup:
    label: str
    bars: list[Bar]
    limit: float | None = None  # a dashed vertical marker (the FLOPs limit), in the bars' unit
    limit_label: str = ""


@dataclass
class Legend:
    items: list[tuple[str, str, str]] = field(default_factory=list)  # (label, colour, kind: "box"|"dash"|"hatch")


def bar_groups(groups: Sequence[BarGroup], unit: str, title: str, desc: str, legend: Legend | None = None,
               width: int = 880) -> str:
    """Groups of horizontal bars on one shared axis (values in `unit`), each bar optionally stacked."""
    label_w, text_w, bar_h, gap, group_gap, top, axis_h = 200, 86, 18, 6, 18, 8, 34
    legend_h = 26 if legend and legend.items else 0
    height = (top + legend_h + sum(20 + len(g.bars) * (bar_h + gap) for g in groups)
              + group_gap * max(0, len(groups) - 1) + axis_h)
    vmax = max([sum(s.value for s in b.segments) for g in groups for b in g.bars] + [g.limit or 0 for g in groups] + [1e-9])
    ticks = nice_ticks(0.0, vmax, 5)
    x0 = label_w
    scale = (width - text_w - x0) / (ticks[-1] or 1.0)
    marks: list[str] = []
    y = top
    if legend and legend.items:
        marks.append(_legend(legend, x0, y + 12))
        y += legend_h
    plot_top = y
    for gi, g in enumerate(groups):
        marks.append(_text(8, y + 13, g.label, weight="600"))
        y += 20
        g_top = y
        for b in g.bars:
            marks.append(_text(x0 - 8, y + bar_h - 5, b.label, anchor="end", fill=AXIS))
            x = float(x0)
            for s in b.segments:
                w = max(0.0, s.value * scale)
                marks.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{s.colour}">'
                             f"<title>{e(s.label)}: {e(f'{s.value:.4g}')} {e(unit)}</title></rect>")
                if b.hatched:
                    marks.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="url(#hatch)"/>')
                x += w
            marks.append(_text(x + 6, y + bar_h - 5, b.text))
            y += bar_h + gap
        if g.limit is not None:
            lx = x0 + g.limit * scale
            marks.append(f'<line x1="{lx:.1f}" y1="{g_top - 3}" x2="{lx:.1f}" y2="{y - gap + 3}" stroke="{DARK}" '
                         f'stroke-width="1.5" stroke-dasharray="4 3"><title>{e(g.limit_label)}</title></line>')
        if gi < len(groups) - 1:
            y += group_gap
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    grid = [f'<line x1="{x0 + t * scale:.1f}" y1="{plot_top}" x2="{x0 + t * scale:.1f}" y2="{y + 6}" stroke="#E5E7EB"/>'
            for t in ticks]
    axis = [f'<line x1="{x0}" y1="{y + 2}" x2="{x0 + ticks[-1] * scale:.1f}" y2="{y + 2}" stroke="{AXIS}"/>']
    axis += [_text(x0 + t * scale, y + 18, tick_label(t, step), anchor="middle", fill=AXIS) for t in ticks]
    axis.append(_text(x0 + ticks[-1] * scale, y + 31, unit, anchor="end", fill=AXIS))
    return "\n".join([*_open(width, height, title, desc, "bars"), _defs(), *grid, *marks, *axis, "</svg>"])


def _defs() -> str:
    return ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
            '<rect width="2" height="6" fill="#FFFFFF" fill-opacity="0.55"/></pattern></defs>')


def _legend(legend: Legend, x: float, y: float) -> str:
    parts = []
    for label, colour, kind in legend.items:
        if kind == "dash":
            parts.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 18:.1f}" y2="{y - 4:.1f}" stroke="{colour}" '
                         f'stroke-width="1.5" stroke-dasharray="4 3"/>')
        elif kind in MARKERS:
            parts.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 18:.1f}" y2="{y - 4:.1f}" stroke="{colour}" stroke-width="2"/>')
            parts.append(_marker(kind, x + 9, y - 4, colour))
        else:
            parts.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="14" height="12" fill="{colour}"/>')
            if kind == "hatch":
                parts.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="14" height="12" fill="url(#hatch)"/>')
        parts.append(_text(x + 22, y, label))
        x += 30 + 6.6 * len(label)
    return "".join(parts)


# ---------------------------------------------------------------- line chart (keep-ratio sweep)
@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    colour: str
    marker: str = "circle"
    dashed: bool = False


def line_chart(series: Sequence[Series], x_label: str, y_label: str, title: str, desc: str, width: int = 440,
               height: int = 250, y_format: str = "{:.4g}", x_ticks: Sequence[float] | None = None) -> str:
    """Lines with markers over shared axes; the legend (one series a line) sits under the plot."""
    legend_h = 18 * len(series) + 8
    left, right, top, bottom = 58, 16, 14, 46 + legend_h
    height += legend_h
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    xt = list(x_ticks) if x_ticks else nice_ticks(min(xs), max(xs), 5)
    pad = (max(ys) - min(ys)) * 0.15 or abs(max(ys)) * 0.05 or 1.0
    yt = nice_ticks(min(ys) - pad, max(ys) + pad, 4)
    px0, px1, py0, py1 = left, width - right, height - bottom, top

    def X(v: float) -> float:
        return px0 + (v - xt[0]) / ((xt[-1] - xt[0]) or 1.0) * (px1 - px0)

    def Y(v: float) -> float:
        return py0 - (v - yt[0]) / ((yt[-1] - yt[0]) or 1.0) * (py0 - py1)

    out = _open(width, height, title, desc, "lines")
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    xstep = min((b - a for a, b in itertools.pairwise(xt)), default=1.0)
    for t in yt:
        out.append(f'<line x1="{px0}" y1="{Y(t):.1f}" x2="{px1}" y2="{Y(t):.1f}" stroke="#E5E7EB"/>')
        out.append(_text(px0 - 6, Y(t) + 4, tick_label(t, ystep), anchor="end", fill=AXIS))
    for t in xt:
        out.append(f'<line x1="{X(t):.1f}" y1="{py0}" x2="{X(t):.1f}" y2="{py0 + 4}" stroke="{AXIS}"/>')
        out.append(_text(X(t), py0 + 17, tick_label(t, xstep), anchor="middle", fill=AXIS))
    out.append(f'<line x1="{px0}" y1="{py0}" x2="{px1}" y2="{py0}" stroke="{AXIS}"/>')
    out.append(f'<line x1="{px0}" y1="{py0}" x2="{px0}" y2="{py1}" stroke="{AXIS}"/>')
    out.append(_text((px0 + px1) / 2, py0 + 34, x_label, anchor="middle", fill=AXIS))
    out.append(_text(14, (py0 + py1) / 2, y_label, anchor="middle", fill=AXIS,
                     extra=f' transform="rotate(-90 14 {(py0 + py1) / 2:.1f})"'))
    for s in series:
        pts = sorted(s.points)
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f"<g>{_marker(s.marker, X(x), Y(y), s.colour)}<title>{e(s.label)}: {e(f'{x:g}')} \u2192 "
                       f"{e(y_format.format(y))}</title></g>")
    for i, s in enumerate(series):
        yy = py0 + 56 + 18 * i
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<line x1="{px0 - 40}" y1="{yy - 4}" x2="{px0 - 18}" y2="{yy - 4}" stroke="{s.colour}" '
                   f'stroke-width="2"{dash}/>')
        out.append(_marker(s.marker, px0 - 29, yy - 4, s.colour, 3.5))
        out.append(_text(px0 - 10, yy, s.label))
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------- 100% bar (engine layer precisions)
def share_bar(parts: Sequence[tuple[str, float, str]], title: str, width: int = 260, height: int = 16) -> str:
    """One horizontal bar split by share: (label, count, colour) parts."""
    total = sum(v for _, v, _ in parts) or 1.0
    desc = ", ".join(f"{label} {v:g}" for label, v, _ in parts)
    out = _open(width, height, title, desc, "share")
    x = 0.0
    for label, v, colour in parts:
        w = v / total * width
        out.append(f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{colour}"><title>{e(label)}: '
                   f"{v:g} ({100 * v / total:.0f}%)</title></rect>")
        x += w
    out.append("</svg>")
    return "".join(out)

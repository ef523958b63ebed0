"""Inline SVG charts for the HTML report.

Each function is pure and returns one ``<svg>`` element as a string: no script, no external font
or resource, every piece of text escaped. That keeps a report a single file that is safe to open
offline and passes a Content-Security-Policy forbidding remote loads. The SVG carries no
``xmlns`` because it is meant to be inlined in HTML, where the namespace is implied.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f5fa8", "#e07b00", "#2e8b57", "#8e44ad", "#c0392b", "#5d6d7e", "#b8860b", "#17a2b8")
WIDTH, HEIGHT = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 58, 180, 34, 52  # the right margin holds the legend
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
CHAR_W = 6.2  # about the width of one 11 px sans-serif character


def _num(value: object) -> float | None:
    """A finite float, or None for anything that cannot be drawn (None, NaN, text)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _label(value: float) -> str:
    """Short text for a tick or value label."""
    text = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return "0.00" if text == "-0.00" else text


def _tick(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def _short(name: str, limit: int = 26) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def nice_range(lo: float, hi: float, count: int = 5, min_step: float = 0.0) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = max((hi - lo) / count, min_step, 1e-12)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


@dataclass
class _Axes:
    """Maps data coordinates to pixels of the plot area."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float

    def x(self, value: float) -> float:
        return LEFT + (value - self.x_lo) / (self.x_hi - self.x_lo) * PLOT_W

    def y(self, value: float) -> float:
        return TOP + PLOT_H - (value - self.y_lo) / (self.y_hi - self.y_lo) * PLOT_H


def _svg(title: str, body: Iterable[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11" '
        f'fill="#1d232b"><title>{escape(title)}</title>' + "".join(body) + "</svg>"
    )


def _empty(title: str) -> str:
    return _svg(title, [
        _text(WIDTH / 2, 20, title, anchor="middle", size=13, bold=True),
        _text(WIDTH / 2, HEIGHT / 2, "no data", anchor="middle", colour="#777"),
    ])


def _text(x: float, y: float, text: str, anchor: str = "start", size: int | None = None,
          bold: bool = False, colour: str | None = None, rotate: bool = False) -> str:
    attrs = f'x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"'
    if size:
        attrs += f' font-size="{size}"'
    if bold:
        attrs += ' font-weight="bold"'
    if colour:
        attrs += f' fill="{colour}"'
    if rotate:
        attrs += f' transform="rotate(-90 {x:.1f} {y:.1f})"'
    return f"<text {attrs}>{escape(text)}</text>"


def _frame(title: str, axes: _Axes, x_ticks: Sequence[tuple[float, str]],
           y_ticks: Sequence[float], x_label: str, y_label: str) -> list[str]:
    """Title, horizontal grid, tick labels, axis lines and axis titles."""
    out = [_text(LEFT + PLOT_W / 2, 20, title, anchor="middle", size=13, bold=True)]
    for tick in y_ticks:
        y = axes.y(tick)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + PLOT_W}" y2="{y:.1f}" '
                   'stroke="#e3e6ea"/>')
        out.append(_text(LEFT - 6, y + 4, _tick(tick), anchor="end"))
    base = TOP + PLOT_H
    labels = [_short(label, 18) for _, label in x_ticks]
    spacing = min((b - a for (a, _), (b, _) in zip(x_ticks, x_ticks[1:])), default=PLOT_W)
    crowded = any(len(label) * CHAR_W > spacing for label in labels)  # then alternate two rows
    for index, ((x, _), label) in enumerate(zip(x_ticks, labels)):
        drop = 14 if crowded and index % 2 else 0
        out.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4 + drop}" '
                   'stroke="#555"/>')
        out.append(_text(x, base + 16 + drop, label, anchor="middle"))
    out.append(f'<path d="M{LEFT} {TOP}V{base}H{LEFT + PLOT_W}" fill="none" stroke="#555"/>')
    if x_label:
        out.append(_text(LEFT + PLOT_W / 2, HEIGHT - 10, x_label, anchor="middle"))
    out.append(_text(14, TOP + PLOT_H / 2, y_label, anchor="middle", rotate=True))
    return out


def _legend(entries: Sequence[tuple[str, str, bool]]) -> list[str]:
    """One row per (label, colour, dashed) in the right margin."""
    out, x = [], LEFT + PLOT_W + 16
    for i, (label, colour, dashed) in enumerate(entries):
        y = TOP + 8 + i * 18
        if dashed:
            out.append(f'<line x1="{x}" y1="{y}" x2="{x + 14}" y2="{y}" stroke="{colour}" '
                       'stroke-dasharray="3 3" stroke-width="2"/>')
        else:
            out.append(f'<rect x="{x}" y="{y - 5}" width="14" height="10" fill="{colour}"/>')
        out.append(_text(x + 20, y + 4, _short(label)))
    return out


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _series_names(groups: Iterable[Mapping[str, object]]) -> list[str]:
    names: dict[str, None] = {}
    for group in groups:
        names.update(dict.fromkeys(str(k) for k in group))
    return list(names)


def _polyline(points: Sequence[tuple[float, float]], axes: _Axes, colour: str,
              markers: bool) -> list[str]:
    coords = " ".join(f"{axes.x(x):.1f},{axes.y(y):.1f}" for x, y in points)
    out = [f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>']
    if markers and len(points) <= 60:
        out += [f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="2.5" fill="{colour}"/>'
                for x, y in points]
    return out


def grouped_bar_chart(groups: Mapping[str, Mapping[str, float]], title: str, y_label: str,
                      y_max: float | None = 1.0) -> str:
    """Bars per group (e.g. target/reference/retrain), one colour per series (forget/retain).

    ``y_max`` fixes the top of the axis (1.0 for rates) so charts of different probes compare at a
    glance; it grows automatically when a value exceeds it, and ``None`` scales to the data.
    """
    series = _series_names(groups.values())
    values = [v for g in groups.values() for v in map(_num, g.values()) if v is not None]
    if not groups or not values:
        return _empty(title)
    top = max(values) if y_max is None or max(values) > y_max else y_max
    ticks = nice_range(min(0.0, min(values)), top)
    axes = _Axes(0, len(groups), ticks[0], ticks[-1])
    slot = PLOT_W / len(groups)
    bar_w = slot * 0.8 / max(len(series), 1)
    zero = axes.y(min(max(0.0, ticks[0]), ticks[-1]))
    body = _frame(title, axes, [(LEFT + (i + 0.5) * slot, str(g)) for i, g in enumerate(groups)],
                  ticks, "", y_label)
    for gi, group in enumerate(groups.values()):
        named = {str(k): v for k, v in group.items()}
        for si, name in enumerate(series):
            value = _num(named.get(name))
            if value is None:
                continue
            x = LEFT + gi * slot + slot * 0.1 + si * bar_w
            y_top = min(axes.y(value), zero)
            height = abs(axes.y(value) - zero)
            body.append(f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{bar_w * 0.92:.1f}" '
                        f'height="{height:.1f}" fill="{_colour(si)}"/>')
            if bar_w >= 14:  # narrower bars have no room for their value
                body.append(_text(x + bar_w * 0.46, y_top - 3, _label(value),
                                  anchor="middle", size=10))
    body += _legend([(name, _colour(i), False) for i, name in enumerate(series)])
    return _svg(title, body)


def roc_chart(curves: Mapping[str, Mapping[str, object]], title: str) -> str:
    """ROC curves (``{"fpr": [...], "tpr": [...], "auc": float}`` each) over the chance line."""
    axes = _Axes(0.0, 1.0, 0.0, 1.0)
    ticks = nice_range(0.0, 1.0)
    body = _frame(title, axes, [(axes.x(t), _tick(t)) for t in ticks], ticks,
                  "False positive rate", "True positive rate")
    body.append(f'<line x1="{axes.x(0)}" y1="{axes.y(0)}" x2="{axes.x(1)}" y2="{axes.y(1)}" '
                'stroke="#999" stroke-dasharray="4 4"/>')
    legend = []
    for i, (name, curve) in enumerate(curves.items()):
        points = [(x, y) for x, y in zip(map(_num, curve.get("fpr") or []),
                                         map(_num, curve.get("tpr") or []), strict=False)
                  if x is not None and y is not None]
        if points:
            body += _polyline(points, axes, _colour(i), markers=False)
        auc = _num(curve.get("auc"))
        legend.append((f"{name} (AUC {auc:.3f})" if auc is not None else str(name),
                       _colour(i), False))
    body += _legend(legend + [("chance", "#999", True)])
    return _svg(title, body)


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
               x_label: str, y_label: str) -> str:
    """One line per series of (xs, ys), e.g. robust accuracy against attack budget epsilon."""
    clean = {
        str(name): [(x, y) for x, y in zip(map(_num, xs), map(_num, ys), strict=False)
                    if x is not None and y is not None]
        for name, (xs, ys) in series.items()
    }
    points = [p for pts in clean.values() for p in pts]
    if not points:
        return _empty(title)
    x_ticks = nice_range(min(p[0] for p in points), max(p[0] for p in points))
    y_ticks = nice_range(min(p[1] for p in points), max(p[1] for p in points))
    axes = _Axes(x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1])
    body = _frame(title, axes, [(axes.x(t), _tick(t)) for t in x_ticks], y_ticks,
                  x_label, y_label)
    for i, pts in enumerate(clean.values()):
        if pts:
            body += _polyline(sorted(pts), axes, _colour(i), markers=True)
    body += _legend([(name, _colour(i), False) for i, name in enumerate(clean)])
    return _svg(title, body)


def histogram(values_by_series: Mapping[str, Sequence[float]], bins: int, title: str,
              x_label: str) -> str:
    """Counts of each series over shared bins, side by side within a bin, so they compare."""
    clean = {str(k): [v for v in map(_num, vals) if v is not None]
             for k, vals in values_by_series.items()}
    every = [v for vals in clean.values() for v in vals]
    if not every:
        return _empty(title)
    bins = max(1, int(bins))
    lo, hi = min(every), max(every)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    counts = {k: [0] * bins for k in clean}
    for name, vals in clean.items():
        for v in vals:
            counts[name][min(int((v - lo) / width), bins - 1)] += 1
    x_ticks = nice_range(lo, hi)
    y_ticks = nice_range(0, max(max(c) for c in counts.values()), min_step=1)
    axes = _Axes(x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1])
    body = _frame(title, axes, [(axes.x(t), _tick(t)) for t in x_ticks], y_ticks,
                  x_label, "count")
    bar_px = (axes.x(lo + width) - axes.x(lo)) / len(counts)
    for si, per_bin in enumerate(counts.values()):
        for b, count in enumerate(per_bin):
            if count:
                x = axes.x(lo + b * width) + si * bar_px
                y = axes.y(count)
                body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_px - 0.5, 0.5):.1f}" '
                            f'height="{axes.y(0) - y:.1f}" fill="{_colour(si)}" '
                            'fill-opacity="0.85"/>')
    body += _legend([(name, _colour(i), False) for i, name in enumerate(counts)])
    return _svg(title, body)

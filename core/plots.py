"""Small line plots as hand-written SVG: the LR finder's curve and a model's losses.

No plotting library: a few polylines, axes with tick labels and marked points are all the
pages need, and SVG scales and is served as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 48
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")


@dataclass
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]


@dataclass
class Marker:
    x: float
    label: str


@dataclass
class Plot:
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    markers: list[Marker] = field(default_factory=list)
    log_x: bool = False


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / count))
    for factor in (1, 2, 5, 10):
        if (hi - lo) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(value: float, log: bool) -> str:
    return f"1e{round(value)}" if log else f"{value:.3g}"


def render(plot: Plot) -> str:
    """The plot as a standalone SVG document."""
    tx = (lambda v: math.log10(v)) if plot.log_x else (lambda v: v)
    points = [
        (tx(x), y)
        for s in plot.series
        for x, y in zip(s.xs, s.ys, strict=False)
        if y is not None and math.isfinite(y) and (x > 0 or not plot.log_x)
    ]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">'
        f"{escape(plot.title)}</text>",
    ]
    if not points:
        out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>')
        return "\n".join([*out, "</svg>"])
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * ph

    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    xticks = range(math.ceil(x0), math.floor(x1) + 1) if plot.log_x else _ticks(x0, x1)
    for t in xticks:
        out.append(
            f'<text x="{px(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">'
            f"{_fmt(t, plot.log_x)}</text>"
        )
    for t in _ticks(y0, y1):
        out.append(f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>')
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
        )
    out.append(
        f'<text x="{LEFT + pw / 2}" y="{HEIGHT - 10}" text-anchor="middle">'
        f"{escape(plot.x_label)}</text>"
    )
    out.append(
        f'<text x="14" y="{TOP + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + ph / 2})">{escape(plot.y_label)}</text>'
    )
    for i, s in enumerate(plot.series):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(
            f"{px(tx(x)):.1f},{py(y):.1f}"
            for x, y in zip(s.xs, s.ys, strict=False)
            if y is not None and math.isfinite(y) and (x > 0 or not plot.log_x)
        )
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}"/>'
        )
        out.append(
            f'<text x="{LEFT + 8}" y="{TOP + 14 + 14 * i}" fill="{colour}">{escape(s.name)}</text>'
        )
    for m in plot.markers:
        if (m.x <= 0 and plot.log_x) or not x0 <= tx(m.x) <= x1:
            continue
        x = px(tx(m.x))
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#555" '
            'stroke-dasharray="4 3"/>'
        )
        out.append(f'<text x="{x + 3:.1f}" y="{TOP + ph - 6}" fill="#555">{escape(m.label)}</text>')
    return "\n".join([*out, "</svg>"])


def lr_find_svg(
    lrs: Sequence[float], losses: Sequence[float], suggestions: dict[str, float]
) -> str:
    markers = [Marker(lr, f"{name} {lr:.1e}") for name, lr in suggestions.items()]
    return render(
        Plot(
            "Learning rate finder",
            "learning rate (log scale)",
            "loss (smoothed)",
            [Series("loss", lrs, losses)],
            markers,
            log_x=True,
        )
    )


def losses_svg(metrics: Sequence[dict[str, float | None]]) -> str:
    """Training and validation loss and error rate per epoch of a model version."""
    epochs = [float(m.get("epoch") or i) for i, m in enumerate(metrics)]
    return render(
        Plot(
            "Loss and error rate per epoch",
            "epoch",
            "value",
            [
                Series(key.replace("_", " "), epochs, [m.get(key) for m in metrics])
                for key in ("train_loss", "valid_loss", "error_rate")
            ],
        )
    )

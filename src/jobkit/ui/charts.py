"""Usage charts as server-rendered inline SVG: no chart library, no script.

The series blob (:func:`jobkit.usage.decode_series`) holds one value per
sample time for each measure; each chart here is one polyline of one measure
against time, sized by a ``viewBox`` so the page's CSS scales it.  Text goes
through :func:`html.escape`: names (a GPU's) come from the job's machine.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

WIDTH, HEIGHT = 600, 160
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 22, 22
MAX_DRAWN = 600
"""Points drawn per line at most: one per horizontal pixel is all a chart can show."""


def line_chart(
    title: str,
    t: Sequence[float],
    values: Sequence[float | None],
    *,
    label: Callable[[float], str],
    y_max: float | None = None,
) -> str:
    """One measure over time as an ``<svg class="chart">``; empty text without points."""
    points = [(float(x), float(y)) for x, y in zip(t, values, strict=False) if _number(y)]
    if not points:
        return ""
    if len(points) > MAX_DRAWN:  # keep every n-th point, and the last
        step = len(points) / MAX_DRAWN
        points = [points[int(i * step)] for i in range(MAX_DRAWN)] + [points[-1]]
    t_end = max(points[-1][0], 1e-9)
    top = max(y_max or 0.0, max(y for _, y in points), 1e-9)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(x: float, y: float) -> str:
        return f"{LEFT + plot_w * x / t_end:.1f},{TOP + plot_h * (1 - y / top):.1f}"

    line = " ".join(xy(x, y) for x, y in points)
    peak = max(y for _, y in points)
    name = html.escape(title)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{name}">'
        f"<title>{name}: peak {html.escape(label(peak))} over {t_end:.0f} s</title>"
        f'<text class="chart-title" x="{LEFT}" y="14">{name}</text>'
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" '
        f'y2="{TOP + plot_h}"/>'
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>'
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">'
        f"{html.escape(label(top))}</text>"
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>'
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        f"{t_end:.0f} s</text>"
        f'<polyline class="series" points="{line}"/>'
        "</svg>"
    )


def usage_charts(series: dict[str, Any]) -> list[str]:
    """Every chart a series has data for: CPU, memory, then per GPU utilization and memory."""
    from jobkit.units import format_size

    t = series.get("t")
    if not isinstance(t, list) or not t:
        return []
    charts = [
        line_chart("CPU (cores)", t, _list(series, "cpu_util"), label=lambda v: f"{v:.2f}"),
        line_chart(
            "Memory (RSS)", t, _list(series, "rss_bytes"), label=lambda v: format_size(int(v))
        ),
    ]
    gpus = series.get("gpus")
    for gpu in gpus if isinstance(gpus, list) else []:
        if not isinstance(gpu, dict):
            continue
        which = f"GPU {gpu.get('index', '?')} {gpu.get('name') or ''}".strip()
        charts.append(
            line_chart(
                f"{which} utilization (%)",
                t,
                _list(gpu, "util"),
                label=lambda v: f"{v:.0f}%",
                y_max=100.0,
            )
        )
        charts.append(
            line_chart(
                f"{which} memory",
                t,
                _list(gpu, "mem_bytes"),
                label=lambda v: format_size(int(v)),
            )
        )
    return [c for c in charts if c]


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

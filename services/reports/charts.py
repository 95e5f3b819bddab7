"""The report's SVG charts: every measured prompt's activation over the search, with the best so
far, and activation against cross-entropy, with the Pareto front, the dataset examples and the
best readable prompt. Plain SVG, no scripts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from neuron_search.services.reports.dataset_reference import DatasetReference, Readable
from neuron_search.services.reports.page_style import BEST_COLOUR, OTHER_SOURCE_COLOUR, SOURCE_COLOURS, SOURCES
from neuron_search.services.reports.page_style import escape as _e
from neuron_search.services.reports.record_summary import Summary
from neuron_search.services.storage.record_store import StoredRecord

CHART_W, CHART_H = 1000, 380
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 20, 40, 48
PLOT_W, PLOT_H = CHART_W - MARGIN_L - MARGIN_R, CHART_H - MARGIN_T - MARGIN_B


def _nice_ticks(
    lo: float, hi: float, count: int = 6, steps: tuple[float, ...] = (1, 2, 2.5, 5, 10)
) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k) covering [lo, hi]."""
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def _tick_label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.1e}"


def _jitter(slot: int) -> float:
    # Spread a batch's dots across its iteration so prompts of one batch do not overplot.
    return ((slot * 0.618034) % 1.0 - 0.5) * 0.6


def activation_chart(summary: Summary, marks: list[int] | None = None) -> str:
    """Every measured prompt's activation by iteration, the best so far, and a dashed line at each
    iteration in `marks` (where a hypothesis was made)."""
    points = summary.plot_points()
    if not points:
        return '<p class="empty">No measured prompts to plot.</p>'
    x_ticks = _nice_ticks(min(p.iteration for p in points), max(summary.last_iteration, 1), 8, (1, 2, 5, 10))
    x_ticks = [int(t) for t in x_ticks if float(t).is_integer()] or [0, 1]
    y_ticks = _nice_ticks(min(p.activation for p in points), max(p.activation for p in points))
    x0, x1 = x_ticks[0] - 0.5, max(summary.last_iteration, 1) + 0.5
    x_ticks = [t for t in x_ticks if t <= x1]
    parts, sx, sy = _plot_frame(x_ticks, y_ticks, (x0, x1), "iteration")
    for mark in marks or []:
        x = sx(mark)
        parts.append(f'<line class="hypothesis" x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_T}" y2="{MARGIN_T + PLOT_H}"/>')
    parts.append(_dots((p.source, sx(p.iteration + _jitter(p.slot)), sy(p.activation)) for p in points))
    parts.append(_best_curve(summary, sx, sy, summary.last_iteration))
    parts.append(_legend(_source_entries(summary.by_source) + [("line", BEST_COLOUR, "best so far")]))
    return _svg(parts, "Activation of every measured prompt against iteration")


def _plot_frame(
    x_ticks: list[float], y_ticks: list[float], x_range: tuple[float, float], x_label: str
) -> tuple[list[str], Any, Any]:
    """The axes of a chart whose y is the activation (spanning y_ticks), a dashed line at zero
    when zero is inside, and the data -> pixel functions (sx, sy)."""
    (x0, x1), y0, y1 = x_range, y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return MARGIN_L + (x - x0) / (x1 - x0) * PLOT_W

    def sy(y: float) -> float:
        return MARGIN_T + (1 - (y - y0) / (y1 - y0)) * PLOT_H

    parts = [_axes(x_ticks, y_ticks, sx, sy, x_label)]
    if y0 < 0 < y1:
        y = sy(0)
        parts.append(f'<line class="zero" x1="{MARGIN_L}" x2="{MARGIN_L + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}"/>')
    return parts, sx, sy


def _svg(parts: list[str], label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="{_e(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="inherit">' + "".join(parts) + "</svg>"
    )


def _axes(x_ticks: list[float], y_ticks: list[float], sx, sy, x_label: str, y_label: str = "activation") -> str:
    plot_w, plot_h = PLOT_W, PLOT_H
    bottom = MARGIN_T + plot_h
    out = [f'<rect class="plot-bg" x="{MARGIN_L}" y="{MARGIN_T}" width="{plot_w}" height="{plot_h}"/>']
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line class="grid" x1="{MARGIN_L}" x2="{MARGIN_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{MARGIN_L - 8}" y="{y:.1f}" text-anchor="end" dy="0.32em">{_tick_label(t)}</text>'
        )
    for t in x_ticks:
        x = sx(t)
        out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 5}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{_tick_label(t)}</text>')
    out.append(f'<line class="axis" x1="{MARGIN_L}" x2="{MARGIN_L + plot_w}" y1="{bottom}" y2="{bottom}"/>')
    out.append(f'<line class="axis" x1="{MARGIN_L}" x2="{MARGIN_L}" y1="{MARGIN_T}" y2="{bottom}"/>')
    out.append(
        f'<text class="axis-label" x="{MARGIN_L + plot_w / 2}" y="{CHART_H - 8}" text-anchor="middle">{_e(x_label)}</text>'
    )
    out.append(
        f'<text class="axis-label" transform="translate(16 {MARGIN_T + plot_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{_e(y_label)}</text>'
    )
    return "".join(out)


def _dots(dots: Iterable[tuple[str, float, float]]) -> str:
    """(source, x, y) in pixels, each a dot in its source's colour."""
    groups: dict[str, list[str]] = {}
    for source, x, y in dots:
        groups.setdefault(source, []).append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6"/>')
    # One <g> per source keeps the colour in one place and the file small.
    return "".join(
        f'<g class="dots" fill="{SOURCE_COLOURS.get(s, OTHER_SOURCE_COLOUR)}">{"".join(c)}</g>'
        for s, c in groups.items()
    )


def _best_curve(summary: Summary, sx, sy, last_iteration: int) -> str:
    steps = [summary.improvements[i] for i in sorted(summary.improvements)]
    if not steps:
        return ""
    path = [f"M{sx(steps[0].iteration):.1f},{sy(steps[0].activation):.1f}"]
    for p in steps[1:]:
        path.append(f"H{sx(p.iteration):.1f}V{sy(p.activation):.1f}")
    path.append(f"H{sx(last_iteration):.1f}")
    return f'<path class="best" d="{"".join(path)}" stroke="{BEST_COLOUR}"/>'


def _source_entries(by_source: Counter) -> list[tuple[str, str, str]]:
    entries = [("dot", SOURCE_COLOURS[s], s) for s in SOURCES if by_source.get(s)]
    return entries + [("dot", OTHER_SOURCE_COLOUR, s) for s in by_source if s not in SOURCES]


def _legend(entries: list[tuple[str, str, str]]) -> str:
    """(marker, colour, label) entries in a row above the plot area, so it never hides what is drawn
    whatever the data's shape. Markers: a dot, a line, a hollow diamond or a ring."""
    x, y = MARGIN_L, 18
    out = []
    for marker, colour, label in entries:
        if marker == "dot":
            out.append(f'<circle cx="{x + 5}" cy="{y - 4}" r="4.5" fill="{colour}"/>')
            width = 10
        elif marker == "line":
            out.append(f'<line class="best" x1="{x}" x2="{x + 24}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}"/>')
            width = 25
        elif marker == "diamond":
            out.append(_diamond(x + 5, y - 4, colour))
            width = 10
        else:
            out.append(f'<circle class="ring" cx="{x + 6}" cy="{y - 4}" r="6" stroke="{colour}"/>')
            width = 12
        out.append(f'<text class="legend" x="{x + width + 5}" y="{y}">{_e(label)}</text>')
        x += width + 5 + 7.5 * len(label) + 20
    return "".join(out)


def activation_chart_note(summary: Summary) -> str:
    if summary.downsampled:
        shown = len(summary.plot_points())
        return (
            f'<p class="note">Showing {shown:,} of {summary.measured:,} measured prompts (uniform sample; '
            "every new best and the top prompts are always drawn). Failed prompts are not plotted.</p>"
        )
    return (
        f'<p class="note">{summary.measured:,} measured prompts; the dots of one batch are spread across its '
        f"iteration. Failed prompts ({summary.failed:,}) are not plotted.</p>"
    )


# ---- activation against cross-entropy ----------------------------------------------------------

REFERENCE_COLOUR = "#1d2430"  # dataset examples and the best readable prompt: not a source's colour


def pareto_chart(summary: Summary, dataset: DatasetReference | None, readable: Readable | None) -> str:
    points = summary.xent_points()
    examples = dataset.points() if dataset else []
    xents = [p.xent for p in points] + [x for x, _ in examples]
    activations = [p.activation for p in points] + [a for _, a in examples]
    x_ticks = _nice_ticks(min(xents), max(xents), 8)
    y_ticks = _nice_ticks(min(activations), max(activations))
    parts, sx, sy = _plot_frame(x_ticks, y_ticks, (x_ticks[0], x_ticks[-1]), "cross-entropy (nats/token)")
    if dataset and dataset.xent is not None:
        # Left of it reads at least as well as the dataset max: where the best readable prompt is
        # chosen. Labelled above the plot area, where no point can be.
        x = sx(dataset.xent)
        parts.append(f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_T - 4}" y2="{MARGIN_T + PLOT_H}"/>')
        parts.append(
            f'<text class="threshold-label" x="{x:.1f}" y="{MARGIN_T - 8}" text-anchor="middle">'
            "dataset max's cross-entropy</text>"
        )
    parts.append(_dots((p.source, sx(p.xent), sy(p.activation)) for p in points))
    parts.append(_front_steps(summary.front, sx, sy, x_ticks[-1]))
    parts.append("".join(_diamond(sx(x), sy(a), REFERENCE_COLOUR) for x, a in examples))
    entries = _source_entries(summary.xent_by_source) + [("line", BEST_COLOUR, "Pareto front")]
    if examples:
        entries.append(("diamond", REFERENCE_COLOUR, "dataset examples"))
    if readable:
        entries.append(("ring", REFERENCE_COLOUR, "best readable"))
        parts.append(_readable_mark(sx(float(readable.record["xent"])), sy(float(readable.record["activation"]))))
    parts.append(_legend(entries))
    return _svg(parts, "Activation of prompts against their cross-entropy, with the Pareto front")


def _front_steps(front: list[StoredRecord], sx, sy, x_end: float) -> str:
    """The front as a staircase: at each cross-entropy, the highest activation reached at or below it."""
    if not front:
        return ""
    first = front[0]
    path = [f"M{sx(first['xent']):.1f},{sy(first['activation']):.1f}"]
    for r in front[1:]:
        path.append(f"H{sx(r['xent']):.1f}V{sy(r['activation']):.1f}")
    path.append(f"H{sx(x_end):.1f}")
    return f'<path class="best front" d="{"".join(path)}" stroke="{BEST_COLOUR}"/>'


def _diamond(x: float, y: float, colour: str) -> str:
    return f'<path class="diamond" d="M{x:.1f},{y - 6:.1f}l6,6l-6,6l-6,-6z" stroke="{colour}"/>'


def _readable_mark(x: float, y: float) -> str:
    # The label goes on whichever side has room.
    left = x > MARGIN_L + PLOT_W - 110
    label_x, anchor = (x - 12, "end") if left else (x + 12, "start")
    return (
        f'<circle class="ring" cx="{x:.1f}" cy="{y:.1f}" r="8" stroke="{REFERENCE_COLOUR}"/>'
        f'<text class="mark-label" x="{label_x:.1f}" y="{y - 8:.1f}" text-anchor="{anchor}">best readable</text>'
    )

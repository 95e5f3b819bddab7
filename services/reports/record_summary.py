"""One streaming pass over a run's records: what the report, results.json and the charts are made of.

The record store is streamed once. Memory stays bounded however long the run: only the top/bottom
records are kept (heaps), and the scatter plot keeps a reservoir sample of points plus every point
that raised the best activation, so the best-so-far curve and the winning prompts are always drawn
even when the dots are thinned out. Prompts with a cross-entropy (gradient and mixed runs) also
feed the Pareto front of activation against cross-entropy and a second reservoir sample for its
scatter plot.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from neuron_search.services.search.findings import distinct_findings
from neuron_search.services.search.themes import Theme, group_themes, near_copies, theme_row
from neuron_search.services.storage.record_store import StoredRecord

MAX_PLOT_POINTS = 5_000
# The top and bottom heaps keep this many times the rows shown: the tables show one row per theme of
# near-copies (services/search/themes.py), and a gradient search spends most of its prompts on a few
# themes. On eight 2,000-prompt gradient runs of the bundled Gemma the tenth theme's best ranked 206th
# to 1,546th of the run's prompts and the twentieth 441st to 1,959th: 100 rows' room (2,000 records
# for the report's top 20, a few MB) holds such a run whole. A longer run can hold fewer themes than
# rows in that room; `themes_short` says so and the report says it.
THEME_ROOM = 100
# The Pareto front of n points in 2-D holds about ln n of them when the two values are independent
# (14 for a million), and a search that trades activation for fluency makes a few dozen; a thousand
# is reached only by a long run whose activation and cross-entropy rise together almost exactly.
# Past it every other inner point is dropped (both ends kept), so memory stays bounded and the
# front keeps its shape; the report says when that happened.
MAX_FRONT = 1_000


class Point(NamedTuple):
    iteration: int
    slot: int
    activation: float
    source: str


class FluencyPoint(NamedTuple):
    """A measured prompt on the activation-against-cross-entropy chart."""

    xent: float
    activation: float
    source: str
    iteration: int
    slot: int


@dataclass
class Summary:
    """What one pass over the records keeps: bounded whatever the number of records."""

    top_n: int
    bottom_n: int
    seen: int = 0
    measured: int = 0
    failed: int = 0
    by_source: Counter = field(default_factory=Counter)
    # Heaps hold (key, tiebreak, record); the tiebreak keeps dicts out of comparisons and, on
    # equal activations, keeps the earlier record.
    _top: list = field(default_factory=list)
    _bottom: list = field(default_factory=list)
    _sample: list[Point] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))
    improvements: dict[int, Point] = field(default_factory=dict)  # iteration -> last new best
    best: StoredRecord | None = None
    token_min: float = 0.0
    token_max: float = 0.0
    last_iteration: int = 0
    # Prompts with a cross-entropy: their count, a uniform sample, and the Pareto front of
    # (activation up, cross-entropy down) as (xent, activation, record), sorted by xent; along it
    # activation rises strictly with xent, or a point would dominate its right-hand neighbour.
    with_xent: int = 0
    xent_by_source: Counter = field(default_factory=Counter)
    _xent_sample: list[FluencyPoint] = field(default_factory=list)
    _xent_rng: random.Random = field(default_factory=lambda: random.Random(1))
    _front: list[tuple[float, float, StoredRecord]] = field(default_factory=list)
    front_thinned: bool = False
    _themes: dict = field(default_factory=dict)  # "top"/"bottom" -> (themes, records folded), until the next record


    def add(self, record: StoredRecord) -> None:
        self._themes.clear()
        self.seen += 1
        self.last_iteration = max(self.last_iteration, int(record["iteration"]))
        self.by_source[record["source"]] += 1
        activation = finite(record["activation"])
        if activation is None:
            self.failed += 1
            return
        self.measured += 1
        self._track_tokens(record["values"])
        self._rank(record, activation)
        self._plot(record, activation)
        xent = finite(record.get("xent"))
        if xent is not None:
            self._fluency(record, activation, xent)

    def _track_tokens(self, values: list[float]) -> None:
        if not values:
            return
        lo, hi = min(values), max(values)
        if not (math.isfinite(lo) and math.isfinite(hi)):  # rare: skip NaN/inf only then
            finite = [v for v in values if math.isfinite(v)] or [0.0]
            lo, hi = min(finite), max(finite)
        self.token_min = min(self.token_min, lo)
        self.token_max = max(self.token_max, hi)

    def _rank(self, record: StoredRecord, activation: float) -> None:
        tiebreak = -self.seen
        # Room for the near-copies of the themes shown, folded when the tables are read.
        _push_bounded(self._top, (activation, tiebreak, record), THEME_ROOM * self.top_n)
        _push_bounded(self._bottom, (-activation, tiebreak, record), THEME_ROOM * self.bottom_n)

    def _plot(self, record: StoredRecord, activation: float) -> None:
        point = Point(int(record["iteration"]), int(record["slot"]), activation, record["source"])
        if self.best is None or activation > float(self.best["activation"]):
            self.best = record
            self.improvements[point.iteration] = point
        _reservoir(self._sample, point, self.measured, self._rng)

    def _fluency(self, record: StoredRecord, activation: float, xent: float) -> None:
        self.with_xent += 1
        self.xent_by_source[record["source"]] += 1
        point = FluencyPoint(xent, activation, record["source"], int(record["iteration"]), int(record["slot"]))
        _reservoir(self._xent_sample, point, self.with_xent, self._xent_rng)
        self._add_to_front(record, activation, xent)

    def _add_to_front(self, record: StoredRecord, activation: float, xent: float) -> None:
        front = self._front
        # The front's best activation at or below this xent is its last point there: if that is as
        # high, the new point is dominated (or equal to it, and the earlier record stands for both).
        below = bisect.bisect_right(front, xent, key=lambda p: p[0])
        if below and front[below - 1][1] >= activation:
            return
        # Otherwise it dominates the points from its xent on whose activation is not higher: a run
        # of neighbours, as activation rises along the front.
        start = end = bisect.bisect_left(front, xent, key=lambda p: p[0])
        while end < len(front) and front[end][1] <= activation:
            end += 1
        front[start:end] = [(xent, activation, record)]
        if len(front) > MAX_FRONT:
            self._front = [front[0], *front[1:-1][1::2], front[-1]]
            self.front_thinned = True

    @property
    def top_themes(self) -> list[Theme[StoredRecord]]:
        """The top table: one theme of near-copies a row, highest first, each with its best record,
        its variants (findings among the kept records) and their activation range."""
        return self._ranked_themes("top")

    @property
    def bottom_themes(self) -> list[Theme[StoredRecord]]:
        """The bottom table's themes, lowest first."""
        return self._ranked_themes("bottom")

    @property
    def top(self) -> list[StoredRecord]:
        """The top themes' best records, each with `variants`, `activation_low` and `activation_high`."""
        return [theme_row(theme) for theme in self.top_themes]

    @property
    def bottom(self) -> list[StoredRecord]:
        """The bottom themes' best records, lowest first, with the same three keys."""
        return [theme_row(theme) for theme in self.bottom_themes]

    @property
    def folded(self) -> tuple[int, int]:
        """Kept records folded into the top and into the bottom table's rows: other forms of a row's
        finding (words after the peak) and near-copies of its prompt."""
        return self._ranked("top")[1], self._ranked("bottom")[1]

    @property
    def themes_short(self) -> tuple[bool, bool]:
        """Whether the top (bottom) table has fewer rows than asked because the kept records hold fewer
        themes, though the run has more records than were kept."""
        return (
            len(self.top_themes) < self.top_n and len(self._top) >= THEME_ROOM * self.top_n,
            len(self.bottom_themes) < self.bottom_n and len(self._bottom) >= THEME_ROOM * self.bottom_n,
        )

    def _ranked_themes(self, which: str) -> list[Theme[StoredRecord]]:
        return self._ranked(which)[0]

    def _ranked(self, which: str) -> tuple[list[Theme[StoredRecord]], int]:
        """A table's themes, and how many kept records other than their best ones they hold."""
        if which not in self._themes:
            heap, n = (self._top, self.top_n) if which == "top" else (self._bottom, self.bottom_n)
            ranked = [r for _, _, r in sorted(heap, key=lambda item: item[:2], reverse=True)]
            themes = group_themes(distinct_findings(ranked), limit=n) if n > 0 else []
            shown = {id(t["best"]) for t in themes}
            folded = sum(
                1 for r in ranked if id(r) not in shown and any(near_copies(t["best"], r) for t in themes)
            )
            self._themes[which] = (themes, folded)
        return self._themes[which]

    @property
    def downsampled(self) -> bool:
        return self.measured > MAX_PLOT_POINTS

    @property
    def front(self) -> list[StoredRecord]:
        """The Pareto front of activation against cross-entropy, by cross-entropy (lowest first)."""
        return [r for _, _, r in self._front]

    def xent_points(self) -> list[FluencyPoint]:
        """The cross-entropy sample plus the front, which is always drawn."""
        keep = {(p.iteration, p.slot): p for p in self._xent_sample}
        keep.update({(p.iteration, p.slot): p for p in map(_fluency_point, self.front)})
        return sorted(keep.values())

    def plot_points(self) -> list[Point]:
        """The sample plus the points that must always be visible: every new best and the top."""
        keep = {(p.iteration, p.slot): p for p in self._sample}
        must = list(self.improvements.values()) + [_point(r) for r in self.top]
        keep.update({(p.iteration, p.slot): p for p in must})
        return sorted(keep.values())


def _reservoir(sample: list, item: Any, seen: int, rng: random.Random) -> None:
    """Reservoir sampling: after `seen` items, `sample` is a uniform sample of them, at most
    MAX_PLOT_POINTS long."""
    if len(sample) < MAX_PLOT_POINTS:
        sample.append(item)
    else:
        index = rng.randrange(seen)
        if index < MAX_PLOT_POINTS:
            sample[index] = item


def _push_bounded(heap: list, item: tuple, size: int) -> None:
    if size <= 0:
        return
    if len(heap) < size:
        heapq.heappush(heap, item)
    elif item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)


def finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _point(record: StoredRecord) -> Point:
    return Point(int(record["iteration"]), int(record["slot"]), float(record["activation"]), record["source"])


def _fluency_point(record: StoredRecord) -> FluencyPoint:
    return FluencyPoint(
        float(record["xent"]), float(record["activation"]), record["source"], int(record["iteration"]), int(record["slot"])
    )

"""A run's results on disk: results.json, records.csv and a self-contained report.html.

The record store is streamed once. Memory stays bounded however long the run: the CSV is written
row by row, only the top/bottom records are kept (heaps), and the scatter plot keeps a reservoir
sample of points plus every point that raised the best activation, so the best-so-far curve and
the winning prompts are always drawn even when the dots are thinned out. Prompts with a
cross-entropy (gradient and mixed runs) also feed the Pareto front of activation against
cross-entropy and a second reservoir sample for its scatter plot.

A neuron's dataset examples (`run.py exemplars`, saved beside the run folders) are the baseline:
the headline puts their max beside the best found, the Pareto chart draws them as reference points.

Everything in the HTML that comes from a prompt or a token was written by an LLM, so it is
escaped; the page uses no scripts and no external resources and opens offline.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import html
import json
import math
import random
import shlex
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from services.reports.explanation_view import explanation_html, hypotheses_html
from services.search.findings import distinct_findings
from services.storage.files import atomic_open, write_atomic
from services.storage.record_store import StoredRecord

MAX_PLOT_POINTS = 5_000
# The top and bottom heaps keep this many times the rows shown, so that folding other forms of a
# finding (services/search/findings.py) still fills the tables unless one finding has more forms.
FOLD_ROOM = 4
# The Pareto front of n points in 2-D holds about ln n of them when the two values are independent
# (14 for a million), and a search that trades activation for fluency makes a few dozen; a thousand
# is reached only by a long run whose activation and cross-entropy rise together almost exactly.
# Past it every other inner point is dropped (both ends kept), so memory stays bounded and the
# front keeps its shape; the report says when that happened.
MAX_FRONT = 1_000
SOURCES = ("seed", "llm", "mutation", "gradient", "fallback")
SOURCE_COLOURS = {"seed": "#7b61b5", "llm": "#1f7ab8", "mutation": "#2a9d6f", "gradient": "#c2185b", "fallback": "#e08a00"}
OTHER_SOURCE_COLOUR = "#777777"
BEST_COLOUR = "#c0262d"
# Token highlight colours (Neuroscope-like): white -> orange for positive, white -> blue for negative.
POSITIVE_RGB = (234, 88, 12)
NEGATIVE_RGB = (37, 99, 235)
TITLE_KEYS = ("model", "layer", "neuron", "llm", "position")
CSV_COLUMNS = ("iteration", "slot", "source", "prompt", "activation", "token", "error", "xent", "tokens", "values")


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


# ----------------------------------------------------------------------------------------------
# Streaming pass


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

    def add(self, record: StoredRecord) -> None:
        self.seen += 1
        self.last_iteration = max(self.last_iteration, int(record["iteration"]))
        self.by_source[record["source"]] += 1
        activation = _finite(record["activation"])
        if activation is None:
            self.failed += 1
            return
        self.measured += 1
        self._track_tokens(record["values"])
        self._rank(record, activation)
        self._plot(record, activation)
        xent = _finite(record.get("xent"))
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
        # Room for other forms of the same findings, folded when the tables are read.
        _push_bounded(self._top, (activation, tiebreak, record), FOLD_ROOM * self.top_n)
        _push_bounded(self._bottom, (-activation, tiebreak, record), FOLD_ROOM * self.bottom_n)

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
    def top(self) -> list[StoredRecord]:
        return self._findings(self._top, self.top_n)[0]

    @property
    def bottom(self) -> list[StoredRecord]:
        return self._findings(self._bottom, self.bottom_n)[0]

    @property
    def folded(self) -> tuple[int, int]:
        """Records left out of the top and of the bottom table as other forms of a finding they show."""
        return self._findings(self._top, self.top_n)[1], self._findings(self._bottom, self.bottom_n)[1]

    @staticmethod
    def _findings(heap: list, n: int) -> tuple[list[StoredRecord], int]:
        """The n best distinct findings of a heap, and how many ranked records among them were folded."""
        ranked = [r for _, _, r in sorted(heap, reverse=True)]
        shown = distinct_findings(ranked)[:n]
        if not shown:
            return [], 0
        last = max(ranked.index(r) for r in shown)
        return shown, last + 1 - len(shown)

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


def _finite(value: float | None) -> float | None:
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


# ----------------------------------------------------------------------------------------------
# The dataset baseline and the best readable prompt


@dataclass(frozen=True)
class DatasetReference:
    """A neuron's top real-text snippets, as `run.py exemplars` saved them (exemplars.json)."""

    records: list[dict]  # highest activation first: prompt, activation, xent (absent in older files), ...
    scanned: int
    corpus: str

    @classmethod
    def from_document(cls, document: dict | None) -> DatasetReference | None:
        if not document or not document.get("records"):
            return None
        return cls(document["records"], int(document.get("snippets_scanned", 0)), str(document.get("corpus", "")))

    @property
    def top(self) -> dict:
        return self.records[0]

    @property
    def max(self) -> float:
        return float(self.top["activation"])

    @property
    def xent(self) -> float | None:
        return _finite(self.top.get("xent"))

    def points(self) -> list[tuple[float, float]]:
        """(xent, activation) of the examples that have a cross-entropy."""
        return [(float(r["xent"]), float(r["activation"])) for r in self.records if _finite(r.get("xent")) is not None]


class Readable(NamedTuple):
    record: StoredRecord
    rule: str  # "dataset_xent" or "balanced"


def best_readable(summary: Summary, dataset: DatasetReference | None) -> Readable | None:
    """The prompt that reads like real text and drives the neuron most.

    With a dataset reference whose top example has a cross-entropy: the highest activation among
    prompts whose cross-entropy is at or below that example's ("dataset_xent"). Otherwise, or when
    no prompt is that readable, the lowest -activation + cross-entropy ("balanced"). Both are points
    of the front: a prompt that dominates another is at least as good under either rule.
    """
    front = summary.front
    if not front:
        return None
    threshold = dataset.xent if dataset else None
    if threshold is not None:
        readable = [r for r in front if r["xent"] <= threshold]
        if readable:
            return Readable(readable[-1], "dataset_xent")  # activation rises along the front
    return Readable(min(front, key=lambda r: r["xent"] - r["activation"]), "balanced")


def _rule_text(readable: Readable, dataset: DatasetReference | None) -> str:
    if readable.rule == "dataset_xent":
        return f"highest activation at a cross-entropy at or below the dataset max's ({dataset.xent:.3f})"
    reason = ""
    if dataset and dataset.xent is not None:
        reason = f"no prompt's cross-entropy is at or below the dataset max's ({dataset.xent:.3f}), so: "
    elif dataset:
        reason = "the dataset examples were saved without their cross-entropy, so: "
    return reason + "lowest −activation + cross-entropy on the front"


# ----------------------------------------------------------------------------------------------
# Public entry point

# What a run's folder holds once a search or `run.py report` has written its results.
RESULT_FILES = {"json": "results.json", "csv": "records.csv", "html": "report.html"}


def write_results(
    run_dir: Path,
    settings: dict,
    stats: dict,
    records: Iterable[StoredRecord],
    top_n: int = 20,
    bottom_n: int = 10,
    bucket_counts: dict[str, int] | None = None,
    dataset: dict | None = None,
    explanation: dict | None = None,
) -> dict[str, Path]:
    """Write results.json, records.csv and report.html into run_dir; return their paths by name.

    `dataset` is the neuron's exemplars.json as `run.py exemplars` saved it (None: there is none);
    `explanation` the run's explanation.json (services/explain/run_explanation.py; None: none).
    """
    explanation = explanation or {}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: run_dir / file for name, file in RESULT_FILES.items()}
    summary = Summary(top_n=top_n, bottom_n=bottom_n)
    _write_csv(paths["csv"], _tap(records, summary))
    buckets = dict(bucket_counts or {})
    statistics = _statistics(stats)
    reference = DatasetReference.from_document(dataset)
    # Each file is written beside itself and renamed into place: a failure (a full disk, a kill)
    # part of the way leaves the previous file whole, and no temporary file.
    write_atomic(
        paths["json"],
        json.dumps(
            {
                **_results_json(settings, statistics, buckets, summary, reference),
                "explanation": explanation.get("final"),
                "hypotheses": explanation.get("hypotheses", []),
            },
            indent=2,
            default=str,
        ),
    )
    page = render_html(settings, statistics, buckets, summary, reference, results_dir=run_dir.parent, explanation=explanation)
    write_atomic(paths["html"], page)
    return paths


def _tap(records: Iterable[StoredRecord], summary: Summary) -> Iterator[StoredRecord]:
    """Feed each record to the summary on its way to the CSV, so the records are read once."""
    for record in records:
        summary.add(record)
        yield record


def _write_csv(path: Path, records: Iterable[StoredRecord]) -> None:
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in records:
            activation = "" if r["activation"] is None else repr(float(r["activation"]))
            writer.writerow(
                [
                    r["iteration"],
                    r["slot"],
                    r["source"],
                    r["prompt"],
                    activation,
                    r["token"],
                    r["error"],
                    "" if r.get("xent") is None else repr(float(r["xent"])),
                    json.dumps(r["tokens"], ensure_ascii=False),
                    json.dumps(r["values"]),
                ]
            )


def _statistics(stats: dict) -> dict[str, float | int]:
    generated = stats.get("generated", 0)
    rate = float(stats.get("accepted", 0)) / generated if generated else 0.0
    statistics: dict[str, float | int] = {}
    for key, value in stats.items():
        statistics[key] = value
        if key == "accepted":
            statistics["accepted_rate"] = rate  # next to its counter in the report's table
    statistics.setdefault("accepted_rate", rate)
    return statistics


def _brief(record: StoredRecord) -> dict[str, Any]:
    return {
        "prompt": record["prompt"],
        "activation": float(record["activation"]),
        "token": record["token"],
        "source": record["source"],
        "iteration": int(record["iteration"]),
        "xent": record.get("xent"),
    }


def _front_brief(record: StoredRecord) -> dict[str, Any]:
    return {
        "prompt": record["prompt"],
        "activation": float(record["activation"]),
        "xent": float(record["xent"]),
        "source": record["source"],
        "iteration": int(record["iteration"]),
    }


def _results_json(
    settings: dict, statistics: dict, buckets: dict, summary: Summary, dataset: DatasetReference | None = None
) -> dict[str, Any]:
    readable = best_readable(summary, dataset)
    return {
        "settings": settings,
        "statistics": statistics,
        "bucket_counts": buckets,
        "records": {
            "total": summary.seen,
            "measured": summary.measured,
            "failed": summary.failed,
            "by_source": dict(summary.by_source),
        },
        "best": _brief(summary.best) if summary.best else None,
        "top": [_brief(r) for r in summary.top],
        "bottom": [_brief(r) for r in summary.bottom],
        "pareto": [_front_brief(r) for r in summary.front],
        "best_readable": {**_front_brief(readable.record), "rule": readable.rule} if readable else None,
        "dataset": {
            "max": dataset.max,
            "prompt": dataset.top["prompt"],
            "xent": dataset.xent,
            "scanned": dataset.scanned,
            "corpus": dataset.corpus,
        }
        if dataset
        else None,
    }


# ----------------------------------------------------------------------------------------------
# HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_html(
    settings: dict,
    statistics: dict,
    buckets: dict,
    summary: Summary,
    dataset: DatasetReference | None = None,
    results_dir: Path | None = None,
    explanation: dict | None = None,
) -> str:
    """The report page; `results_dir` (the run folder's parent) only words the hint on getting a
    dataset reference when there is none; `explanation` is the run's explanation.json."""
    explanation = explanation or {}
    explained = explanation_html(explanation)
    timeline = hypotheses_html(explanation)
    marks = [int(h["iteration"]) for h in explanation.get("hypotheses", [])]
    scale = max(abs(summary.token_min), abs(summary.token_max)) or 1.0
    fluency = []
    if summary.with_xent:
        readable = best_readable(summary, dataset)
        body = _pareto_chart(summary, dataset, readable) + _pareto_note(summary, dataset, settings, results_dir)
        fluency = [_section("Activation against cross-entropy", body + _readable_block(readable, dataset), "pareto")]
    sections = [
        _header(settings),
        *([_section("What the neuron detects", explained, "explanation")] if explained else []),
        _headline(statistics, summary, dataset, _exemplars_hint(settings, results_dir)),
        _section("Activation over the search", _chart(summary, marks) + _chart_note(summary)),
        *([_section("Hypotheses during the search", timeline, "hypotheses")] if timeline else []),
        *fluency,
        _section(
            f"Top {len(summary.top)} prompts",
            scale_legend(scale) + _prompt_table(summary.top, scale) + _folded_note(summary.folded[0]),
        ),
        _section(
            f"Bottom {len(summary.bottom)} prompts",
            _prompt_table(summary.bottom, scale) + _folded_note(summary.folded[1]),
        ),
        _section("Statistics", _stats_tables(statistics, buckets, summary)),
    ]
    model, layer, neuron = (settings.get(k, "?") for k in ("model", "layer", "neuron"))
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(f'{model} · layer {layer} · neuron {neuron}')}</title>\n<style>{CSS}</style>\n</head>\n"
    )
    return head + "<body>\n<main>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"


def _folded_note(folded: int) -> str:
    if not folded:
        return ""
    return (
        f'<p class="note">One row per finding: {folded} other prompt{"s" if folded > 1 else ""} that share a '
        "row's text through its peak token and its activation (words after the peak cannot change it) "
        "are folded into that row, shown in its shortest form.</p>"
    )


def _section(title: str, body: str, anchor: str | None = None) -> str:
    anchor = anchor or title.split()[0].lower()  # chart: #activation, tables: #top, #bottom, #statistics
    return f'<section id="{_e(anchor)}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _header(settings: dict) -> str:
    chips = "".join(
        f'<span class="chip"><b>{_e(k)}</b> {_e(settings[k])}</span>'
        for k in ("llm", "position")
        if k in settings
    )
    others = [(k, v) for k, v in settings.items() if k not in TITLE_KEYS]
    table = ""
    if others:
        cells = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(_setting(v))}</dd></div>" for k, v in others)
        table = f'<details class="settings" open><summary>Settings</summary><dl>{cells}</dl></details>'
    layer, neuron = _e(settings.get("layer", "?")), _e(settings.get("neuron", "?"))
    return (
        '<header>\n<p class="kicker">Max-activating prompts</p>\n'
        f'<h1>Neuron <span class="mono">L{layer}/N{neuron}</span>'
        f' <span class="model">{_e(settings.get("model", "?"))}</span></h1>\n'
        f'<div class="chips">{chips}</div>\n{table}\n</header>'
    )


def _setting(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "–"
    if value is None or value == "":
        return "–"
    return str(value)


def _exemplars_hint(settings: dict, results_dir: Path | None) -> str:
    """The command that saves this neuron's dataset examples where this run's report finds them."""
    words = ["python", "run.py", "exemplars"]
    for key in ("neuron", "layer", "model"):
        words += [f"--{key}", str(settings.get(key, "?"))]
    if results_dir is not None and Path(results_dir).resolve() != Path("results").resolve():
        words += ["--results-dir", str(results_dir)]
    return shlex.join(words)


def _headline(statistics: dict, summary: Summary, dataset: DatasetReference | None = None, hint: str = "") -> str:
    best = summary.best
    if best:
        best_note = f"peak at {token_label(best['token'])} · iteration {int(best['iteration'])}"
    else:
        best_note = "nothing measured"
    measured = statistics.get("measured", summary.measured)
    generated, accepted = statistics.get("generated", 0), statistics.get("accepted", 0)
    errors, fallbacks = statistics.get("llm_errors", 0), statistics.get("fallback_batches", 0)
    # (label, value, note as HTML already escaped)
    cards = [
        ("Best activation", _fmt(float(best["activation"])) if best else "–", best_note),
        ("Prompts measured", f"{measured:,}", _e(f"{summary.failed:,} failed · {summary.seen:,} records")),
        ("Accepted rate", f"{statistics['accepted_rate']:.1%}", _e(f"{accepted:,} of {generated:,} candidates")),
        ("LLM calls", f"{statistics.get('llm_calls', 0):,}", _e(f"{errors:,} errors · {statistics.get('mutations', 0):,} mutations · {fallbacks:,} fallback batches")),
    ]
    if dataset:
        cards.insert(1, ("Dataset max", _fmt(dataset.max), _e(_dataset_note(best, dataset))))
    html_cards = "".join(
        f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
        f'<div class="note">{note}</div></div>'
        for label, value, note in cards
    )
    pointer = ""
    if not dataset:
        pointer = f'<p class="note dataset-hint">No dataset max to compare with yet: <code>{_e(hint)}</code></p>'
    cls = "cards with-dataset" if dataset else "cards"
    return f'<section class="{cls}">{html_cards}</section>{pointer}' + _best_prompt(best, dataset)


def _dataset_note(best: StoredRecord | None, dataset: DatasetReference) -> str:
    # A ratio means something only against a positive dataset max.
    ratio = f"best found {float(best['activation']) / dataset.max:.2f}× this · " if best and dataset.max > 0 else ""
    return f"{ratio}top of {dataset.scanned:,} real snippets"


def _best_prompt(best: StoredRecord | None, dataset: DatasetReference | None = None) -> str:
    # The raw text, untokenized, so it can be read and copied as the LLM wrote it.
    if not best:
        return ""
    reference = ""
    if dataset:
        xent = "" if dataset.xent is None else f" · cross-entropy {dataset.xent:.3f}"
        reference = (
            f'<div class="label">Dataset max · top snippet of {_e(dataset.corpus or "the corpus")}{_e(xent)}</div>'
            f'<pre>{_e(dataset.top["prompt"])}</pre>'
        )
    return (
        f'<section class="best-prompt"><div class="label">Best prompt · {_source_pill(best["source"])}</div>'
        f'<pre>{_e(best["prompt"])}</pre>{reference}</section>'
    )


def token_label(token: str) -> str:
    """A token as shown inline: escaped, spaces visible, newlines as ↵."""
    return f'<code class="tokname">{_e(_visible(token))}</code>'


def _visible(token: str) -> str:
    return token.replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")


# ---- tokens ------------------------------------------------------------------------------------


def token_spans(record: StoredRecord, scale: float) -> str:
    tokens, values = record["tokens"], record["values"]
    if not tokens:
        return f'<span class="plain">{_e(record["prompt"])}</span>'
    peak = _peak_index(tokens, values, record["token"])
    spans = []
    values = list(values) + [math.nan] * (len(tokens) - len(values))  # never drop a token from view
    for i, (token, value) in enumerate(zip(tokens, values)):
        cls = "tok peak" if i == peak else "tok"
        spans.append(
            f'<span class="{cls}" style="background:{_token_colour(value, scale)}" '
            f'title="{_e(repr(token))}: {_e(_fmt(value))}">{_e(_visible(token))}</span>'
        )
    return "".join(spans)


def _peak_index(tokens: list[str], values: list[float], peak_token: str) -> int:
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return -1
    # Prefer the store's peak token (it may differ from the argmax only on ties or odd values).
    matching = [(v, i) for v, i in finite if tokens[i] == peak_token] or finite
    return max(matching, key=lambda vi: (vi[0], -vi[1]))[1]


def _token_colour(value: float, scale: float) -> str:
    if not math.isfinite(value) or value == 0:
        return "transparent"
    alpha = min(abs(value) / scale, 1.0)
    r, g, b = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    return f"rgba({r},{g},{b},{alpha:.3f})"


def scale_legend(scale: float, basis: str = "the run's largest |value|") -> str:
    neg = "rgb({},{},{})".format(*NEGATIVE_RGB)
    pos = "rgb({},{},{})".format(*POSITIVE_RGB)
    return (
        f'<div class="scale"><span>Token colour: activation relative to {_e(basis)}</span>'
        f'<span class="mono">−{_fmt(scale, 2)}</span>'
        f'<span class="bar" style="background:linear-gradient(90deg,{neg},#fff,{pos})"></span>'
        f'<span class="mono">+{_fmt(scale, 2)}</span>'
        '<span class="peak-demo tok peak">peak</span><span>= peak token · hover a token for its value</span></div>'
    )


def _prompt_table(records: list[StoredRecord], scale: float) -> str:
    if not records:
        return '<p class="empty">No measured prompts.</p>'
    rows = "".join(
        f"<tr><td class=\"rank\">{i}</td><td class=\"num\">{_fmt(float(r['activation']))}</td>"
        f"<td class=\"prompt\">{token_spans(r, scale)}</td>"
        f"<td>{_source_pill(r['source'])}</td><td class=\"num\">{int(r['iteration'])}</td></tr>"
        for i, r in enumerate(records, start=1)
    )
    return (
        '<table class="prompts"><thead><tr><th>#</th><th class="num">Activation</th><th>Prompt</th>'
        f'<th>Source</th><th class="num">Iter.</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _source_pill(source: str) -> str:
    colour = SOURCE_COLOURS.get(source, OTHER_SOURCE_COLOUR)
    return f'<span class="pill" style="--c:{colour}">{_e(source)}</span>'


# ---- statistics --------------------------------------------------------------------------------


def _stats_tables(statistics: dict, buckets: dict, summary: Summary) -> str:
    rows = "".join(
        f"<tr><th>{_e(k.replace('_', ' '))}</th><td class=\"num\">{_e(_stat(k, v))}</td></tr>"
        for k, v in statistics.items()
    )
    source_rows = "".join(
        f'<tr><th>{_source_pill(s)}</th><td class="num">{n:,}</td></tr>'
        for s, n in summary.by_source.most_common()
    )
    bucket_rows = "".join(
        f'<tr><th>{_e(k)}</th><td class="num">{_e(_stat(k, v))}</td></tr>' for k, v in buckets.items()
    )
    bucket_table = bucket_rows or '<tr><td colspan="2" class="empty">none recorded</td></tr>'
    return (
        '<div class="stats">'
        f'<table class="kv"><caption>Counters</caption>{rows}</table>'
        f'<table class="kv"><caption>Bucket counts</caption>{bucket_table}</table>'
        f'<table class="kv"><caption>Records by source</caption>{source_rows}</table>'
        "</div>"
    )


def _stat(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if key.endswith("_rate") else f"{value:,.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# ---- chart -------------------------------------------------------------------------------------

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


def _chart(summary: Summary, marks: list[int] | None = None) -> str:
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


def _chart_note(summary: Summary) -> str:
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


def _pareto_chart(summary: Summary, dataset: DatasetReference | None, readable: Readable | None) -> str:
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


def _pareto_note(summary: Summary, dataset: DatasetReference | None, settings: dict, results_dir: Path | None) -> str:
    shown = "all drawn"
    if summary.with_xent > MAX_PLOT_POINTS:
        shown = f"showing {len(summary.xent_points()):,} (a uniform sample; the front is always drawn)"
    front = f"The Pareto front holds the {len(summary.front):,} prompts that no other beats on both."
    if summary.front_thinned:
        front = front[:-1] + f" (thinned to at most {MAX_FRONT:,} points, both ends kept)."
    if dataset and dataset.points():
        reference = _e(f"Diamonds: the top {len(dataset.points())} dataset examples of {dataset.scanned:,} real snippets.")
    elif dataset:
        command = _e(_exemplars_hint(settings, results_dir))
        reference = f"The dataset examples were saved without their cross-entropy: <code>{command}</code> again draws them here."
    else:
        reference = "No dataset examples to compare with (see the command under the headline)."
    return (
        f'<p class="note">{summary.with_xent:,} prompts have a cross-entropy under the subject model (the mean '
        f"next-token loss of their own tokens: lower reads more like real text), {shown}. {_e(front)} {reference}</p>"
    )


def _readable_block(readable: Readable | None, dataset: DatasetReference | None) -> str:
    if not readable:
        return ""
    r = readable.record
    return (
        f'<div class="readable"><div class="label">Best readable prompt · {_source_pill(r["source"])} · '
        f'activation {_fmt(float(r["activation"]))} · cross-entropy {_fmt(float(r["xent"]))}</div>'
        f'<pre>{_e(r["prompt"])}</pre><p class="note">Chosen as: {_e(_rule_text(readable, dataset))}.</p></div>'
    )


CSS = """
:root {
  --fg: #1d2430; --muted: #5f6b7a; --line: #e3e7ee; --bg: #f6f7f9; --card: #fff;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 64px; }
header { margin-bottom: 20px; }
.kicker { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: .08em; font-size: 12px; font-weight: 600; }
h1 { margin: 2px 0 8px; font-size: 30px; line-height: 1.2; }
h1 .model { color: var(--muted); font-weight: 500; font-size: 22px; margin-left: 6px; }
h2 { font-size: 18px; margin: 0 0 12px; }
.mono, code { font-family: var(--mono); }
.chips { display: flex; gap: 8px; flex-wrap: wrap; }
.chip { background: var(--card); border: 1px solid var(--line); border-radius: 999px; padding: 2px 10px; font-size: 13px; }
.chip b { color: var(--muted); font-weight: 600; margin-right: 4px; }
details.settings { margin-top: 12px; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; }
details.settings summary { cursor: pointer; color: var(--muted); font-size: 13px; font-weight: 600; }
details.settings dl { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 2px 24px; margin: 8px 0 4px; font-size: 13px; }
details.settings dl div { display: flex; justify-content: space-between; gap: 12px; border-bottom: 1px dotted var(--line); padding: 2px 0; }
details.settings dt { color: var(--muted); }
details.settings dd { margin: 0; font-family: var(--mono); text-align: right; overflow-wrap: anywhere; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px; margin-bottom: 18px; }
section.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 14px; background: none; border: 0; padding: 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; }
.card .label { color: var(--muted); font-size: 13px; font-weight: 600; }
.card .value { font-size: 28px; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.25; }
.card .note { color: var(--muted); font-size: 12.5px; }
.tokname { background: #fdeee3; border-radius: 3px; padding: 0 3px; white-space: pre-wrap; color: var(--fg); }
svg.chart { width: 100%; height: auto; display: block; font-size: 12px; }
svg .plot-bg { fill: #fbfcfd; }
svg .grid { stroke: #e8ebf0; stroke-width: 1; }
svg .axis { stroke: #8a94a3; stroke-width: 1; }
svg .zero { stroke: #8a94a3; stroke-dasharray: 4 3; }
svg .tick { fill: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
svg .axis-label { fill: var(--fg); font-size: 13px; font-weight: 600; }
svg .dots circle { fill-opacity: .55; }
svg .best { fill: none; stroke-width: 2.2; stroke-linejoin: round; }
svg .legend { fill: var(--fg); font-size: 12.5px; }
svg .diamond { fill: #fff; fill-opacity: .7; stroke-width: 1.6; }
svg .ring { fill: none; stroke-width: 2; }
svg .threshold { stroke: #8a94a3; stroke-width: 1; stroke-dasharray: 5 4; }
svg .threshold-label { fill: var(--muted); font-size: 11px; }
svg .mark-label { fill: var(--fg); font-size: 12px; font-weight: 600; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.readable { margin-top: 12px; border-top: 1px solid var(--line); padding-top: 10px; }
.readable .label { color: var(--muted); font-size: 13px; font-weight: 600; margin-bottom: 4px; }
.readable pre { margin: 0; font: 14px/1.5 var(--mono); white-space: pre-wrap; overflow-wrap: anywhere; }
section.cards.with-dataset { grid-template-columns: repeat(5, 1fr); }
p.note.dataset-hint { margin: -8px 0 12px; }
p.explanation { font-size: 20px; line-height: 1.4; margin: 4px 0 10px; }
table.scores { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
table.scores th, table.scores td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
line.hypothesis { stroke: #8a5a00; stroke-dasharray: 4 3; stroke-width: 1; }
p.note.dataset-hint code { font-size: 12px; }
section.best-prompt pre + .label { margin-top: 10px; }
section.best-prompt { padding: 12px 16px; }
section.best-prompt .label { color: var(--muted); font-size: 13px; font-weight: 600; margin-bottom: 4px; }
section.best-prompt pre { margin: 0; font: 14px/1.5 var(--mono); white-space: pre-wrap; overflow-wrap: anywhere; }
p.note { color: var(--muted); font-size: 12.5px; margin: 6px 0 0; }
.scale { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; font-size: 12.5px; color: var(--muted); margin-bottom: 10px; }
.scale .bar { width: 160px; height: 10px; border-radius: 3px; border: 1px solid var(--line); }
.scale .peak-demo { margin-left: 14px; color: var(--fg); }
table.prompts { width: 100%; border-collapse: collapse; }
table.prompts th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 6px 8px; }
table.prompts td { border-bottom: 1px solid var(--line); padding: 7px 8px; vertical-align: baseline; }
table.prompts tbody tr:hover { background: #fafbfc; }
td.rank { color: var(--muted); width: 2.5em; font-variant-numeric: tabular-nums; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.prompts th.num { text-align: right; }
td.prompt { font-family: var(--mono); font-size: 13.5px; line-height: 1.9; white-space: pre-wrap; overflow-wrap: anywhere; width: 100%; }
.tok { white-space: pre-wrap; border-radius: 2px; padding: 1px 0; }
.tok.peak { outline: 2px solid #1d2430; outline-offset: 0; border-radius: 2px; }
.plain { color: var(--muted); }
.pill { display: inline-block; font-size: 12px; padding: 0 8px; border-radius: 999px; color: var(--c); background: color-mix(in srgb, var(--c) 12%, white); border: 1px solid color-mix(in srgb, var(--c) 35%, white); }
.stats { display: grid; grid-template-columns: repeat(3, 1fr); gap: 24px; align-items: start; }
table.kv { border-collapse: collapse; width: 100%; font-size: 13.5px; }
table.kv caption { text-align: left; font-weight: 600; color: var(--muted); font-size: 12.5px; padding-bottom: 4px; }
table.kv th { text-align: left; font-weight: 400; padding: 3px 0; border-bottom: 1px solid var(--line); }
table.kv td { padding: 3px 0; border-bottom: 1px solid var(--line); }
.empty { color: var(--muted); font-style: italic; }
@media (max-width: 800px) { section.cards, .stats { grid-template-columns: 1fr 1fr; } }
"""

"""What a person watches: the live progress line, the statistics block and the result tables.

Prompts, tokens, explanations, paths and errors come from outside (the LLM, the gradient search, a
corpus, the user): they reach the console as `Text`, never as markup, so `[/url]` or `[bold]` in a
prompt is shown as written instead of styling the line or raising a MarkupError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text, TextType

from neuron_search.context import SearchContext
from neuron_search.services.reports.token_colours import NEGATIVE_RGB, POSITIVE_RGB
from neuron_search.services.search.themes import group_themes
from neuron_search.state import Measurement, Record, SearchState, Stats


class ProgressDisplay(Protocol):
    def update(self, state: SearchState, context: SearchContext) -> None: ...
    def close(self) -> None: ...


def literal(value: object, style: str = "") -> Text:
    """`value` as plain text on the console: its brackets are shown, never read as markup."""
    return Text(str(value), style=style)


def error_text(label: str, message: object) -> Text:
    """`label` in bold red, then `message` (an error, which may quote a prompt or a path) as written."""
    return Text.assemble((label, "bold red"), " ", str(message))


def _title(title: TextType) -> Text:
    """A table title as written, in rich's title style (a str title would be read as markup)."""
    return title if isinstance(title, Text) else Text(title, style="table.title")


class _LineColumn(ProgressColumn):
    """The task's `line` field, a Text built by the display: a TextColumn would parse it as markup."""

    def render(self, task: Task) -> Text:
        return task.fields.get("line") or Text()


def _best_text(activation: float, label: str) -> Text:
    return Text.assemble("best ", (f"{activation:.4f}", "bold green"), " ", label)


class RichProgress:
    """A live progress line (in a terminal or a notebook), plus the statistics every N iterations."""

    def __init__(self, stats_every: int = 0, console: Console | None = None) -> None:
        self.console = console or Console()
        self.stats_every = stats_every
        self._bar = Progress(
            TextColumn("[bold]iteration"),
            MofNCompleteColumn(),
            BarColumn(bar_width=16),
            TimeElapsedColumn(),
            _LineColumn(),
            console=self.console,
        )
        self._task = None

    def update(self, state: SearchState, context: SearchContext) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("", total=context.iterations)
        stats, best = state["stats"], state.get("best")
        line = Text(f"tried {stats['generated']}  accepted {stats['accepted']}  ")
        line.append_text(_best_text(best["activation"], repr(best["prompt"][:48])) if best else Text("best -"))
        if state.get("route") == "done" and context.explain and not state.get("explanation"):
            line.append("  · now explaining the neuron and scoring that on held-out prompts")
        self._bar.update(self._task, completed=min(state["iteration"], context.iterations), line=line)
        if self.stats_every and state["iteration"] % self.stats_every == 0 and state["iteration"]:
            self._bar.console.print(stats_table(stats, f"Statistics after iteration {state['iteration']}"))

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()


class SweepProgress:
    """The live line of a sweep: neurons done, running and failed, and the best activation so far."""

    def __init__(self, console: Console | None = None) -> None:
        self._bar = Progress(
            TextColumn("[bold]neurons"),
            MofNCompleteColumn(),
            BarColumn(bar_width=16),
            TimeElapsedColumn(),
            _LineColumn(),
            console=console or Console(),
        )
        self._task = None

    def update(self, statuses: Sequence) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("", total=len(statuses))
        count = {s: sum(1 for row in statuses if row.status == s) for s in ("done", "running", "failed")}
        done = [row for row in statuses if row.status == "done" and row.best is not None]
        best = max(done, key=lambda row: row.best, default=None)
        line = Text(f"running {count['running']}  failed {count['failed']}  ")
        line.append_text(_best_text(best.best, f"(neuron {best.neuron})") if best else Text("best -"))
        self._bar.update(self._task, completed=count["done"], line=line)

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()


def top_neurons_table(statuses: Sequence, sweep_id: str, n: int = 10) -> Table:
    """A finished sweep's `n` best neurons: neuron, best activation, measured prompts, best prompt."""
    done = sorted((s for s in statuses if s.status == "done" and s.best is not None), key=lambda s: -s.best)
    table = Table(title=_title(f"Top neurons of sweep {sweep_id}"), title_justify="left")
    for column in ("neuron", "best", "measured", "best prompt"):
        table.add_column(column, justify="right" if column != "best prompt" else "left")
    for s in done[:n]:
        table.add_row(str(s.neuron), f"{s.best:.4f}", str(s.measured), literal(repr((s.best_prompt or "")[:60])))
    return table


def records_table(records: Sequence[Record], title: TextType) -> Table:
    """One row a record; where the records stand for themes of near-copies (`result.top()`), the
    findings each stands for ("variants") and their activation range."""
    themed = any("variants" in r for r in records)
    table = Table(title=_title(title), title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("activation", justify="right")
    if themed:
        table.add_column("variants", justify="right")
        table.add_column("range", justify="right")
    table.add_column("peak token")
    table.add_column("source")
    table.add_column("iter", justify="right")
    table.add_column("prompt", overflow="fold")
    for rank, r in enumerate(records, 1):
        theme = [str(r.get("variants", 1)), _range(r)] if themed else []
        table.add_row(
            str(rank), f"{r['activation']:.4f}", *theme, literal(repr(r["token"])), literal(r["source"]), str(r["iteration"]), literal(r["prompt"])
        )
    return table


def _range(record: Record) -> str:
    low, high = record.get("activation_low"), record.get("activation_high")
    if low is None or high is None or low == high:
        return f"{record['activation']:.4f}"
    return f"{low:.4f}–{high:.4f}"


def stats_table(stats: Stats, title: TextType = "Statistics", buckets: dict[str, int] | None = None, unique: int | None = None) -> Table:
    table = Table(title=_title(title), title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    generated = max(stats["generated"], 1)
    rows = [
        ("prompts generated", f"{stats['generated']}"),
        ("accepted", f"{stats['accepted']} ({100 * stats['accepted'] / generated:.1f}%)"),
        ("rejected as semantic near-copies", f"{stats['rejected_similar']}"),
        ("rejected as exact duplicates", f"{stats['rejected_duplicate']}"),
        ("rejected as empty", f"{stats['rejected_empty']}"),
        ("measured", f"{stats['measured']}"),
        ("failed to measure", f"{stats['failed']}"),
        ("LLM calls (errors, empty answers)", f"{stats['llm_calls']} ({stats['llm_errors']}, {stats['llm_empty']})"),
        ("mutations filling LLM batches", f"{stats.get('mutations', 0)}"),
        ("regenerations / fallback batches", f"{stats['regenerations']} / {stats['fallback_batches']}"),
        ("gradient batches", f"{stats.get('gradient_batches', 0)}"),
    ]
    if buckets is not None:
        rows.append(("buckets high / mid / low", f"{buckets['high']} / {buckets['mid']} / {buckets['low']}"))
    if unique is not None:
        rows.append(("unique prompts", f"{unique}"))
    for what, count in rows:
        table.add_row(what, literal(count))
    return table


def coloured_tokens(m: Measurement, scale: float) -> Text:
    """The prompt's tokens on the HTML report's colours (white to orange, white to blue), the
    peak token underlined, for a terminal."""
    text = Text()
    for i, (token, value) in enumerate(zip(m["tokens"], m["values"])):
        style = "bold underline" if i == m["peak"] else ""
        if math.isfinite(value) and value:
            alpha = min(abs(value) / scale, 1.0)
            r, g, b = (round(255 + (c - 255) * alpha) for c in (POSITIVE_RGB if value > 0 else NEGATIVE_RGB))
            style += f" black on rgb({r},{g},{b})"
        text.append(token.replace("\n", "↵"), style=style.strip())
    return text


def exemplars_table(records: Sequence[Measurement], title: TextType) -> Table:
    """The snippets one per theme (services/search/themes.py: near-copies, such as two windows of one
    passage, fold into their best), with how many snippets each row stands for."""
    scale = max((abs(v) for r in records for v in r["values"] if math.isfinite(v)), default=0.0) or 1.0
    table = Table(title=_title(title), title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("activation", justify="right")
    table.add_column("variants", justify="right")
    table.add_column("peak token")
    table.add_column("snippet", overflow="fold")
    for rank, theme in enumerate(group_themes(list(records)), 1):
        r = theme["best"]
        peak = repr(r["tokens"][r["peak"]]) if r["tokens"] else ""
        table.add_row(str(rank), f"{r['activation']:.4f}", str(theme["variants"]), literal(peak), coloured_tokens(r, scale))
    return table

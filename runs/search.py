"""One search from start to end: its folder opened (runs/lifecycle.py), the graph driven an iteration
at a time with a SQLite checkpointer, the evidence that needs the model kept (evidence.json:
services/evidence/run_evidence.py), and what it found. `NeuronSearch` (neuron_search.py) and a
sweep's workers (runs/sweep_worker.py) run their searches here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neuron_search.context import SearchContext
from neuron_search.graph import build_graph, steps_per_iteration
from neuron_search.nodes.stagnation_check import stop_reason
from neuron_search.runs.lifecycle import open_run
from neuron_search.services.explain.run_explanation import read_explanation
from neuron_search.services.reports.display import ProgressDisplay, RichProgress
from neuron_search.services.reports.result_files import RESULT_FILES
from neuron_search.services.search.findings import ranked_themes
from neuron_search.services.search.themes import Theme, group_themes, theme_row
from neuron_search.services.storage.record_store import RecordStore, StoredRecord
from neuron_search.state import Record, SearchState

STOPPED_BY_USER = "stopped by the user"  # the stop reason of a run that Ctrl-C or SIGTERM ended between batches

log = logging.getLogger("neuron_search")


def check_setting_names(settings: Mapping[str, Any]) -> None:
    """A TypeError, as for an unknown keyword argument, unless every name is a SearchContext field."""
    known = {f.name for f in dataclasses.fields(SearchContext)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"Unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


class SearchResult:
    """What a search found. `records` reads the run's record store, so nothing is lost to top-k."""

    def __init__(self, run_dir: Path, state: SearchState, context: SearchContext) -> None:
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.state = state
        self.context = context

    @property
    def best(self) -> tuple[str, float] | None:
        best = self.state.get("best")
        return (best["prompt"], best["activation"]) if best else None

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.state["stats"])

    @property
    def explanation(self) -> dict:
        """What the neuron detects, as the run ended: {"explanation": the sentence, "scores": detection
        and generation beside a control, ...} (explanation.json's final block; {} with --no-explain)."""
        return read_explanation(self.run_dir).get("final", {})

    @property
    def evidence(self) -> dict:
        """What the neuron peaks on and what it writes, as results.json's `evidence` holds it ({} when
        the run's results.json cannot be read), services/evidence/evidence_block.py's `Evidence`:

        - `peak_tokens`: `top_prompts` (over the top table's prompts) and `real_snippets` (over the
          neuron's top real snippets; None where none are saved or cached), each {"label", "records",
          "at_peak": [{"token", "count", "mean_activation", "max_activation"}], "before_peak":
          [{"token", "count"}], "peak_first"}, most frequent first;
        - `logit_effects`: {"promoted", "suppressed": [{"token", "id", "effect"}] (10 each, strongest
          first), "method", "norms", ...} (services/evidence/logit_effects.py), or None;
        - `attribution`: per top theme's best prompt and real snippet, [{"prompt", "source", "tokens",
          "values", "peak", "activation", "removal", "replacement", "replacement_token", ...}]: each
          token's effect on the activation at the peak, None from the peak on
          (services/evidence/attribution.py).
        """
        try:
            document = json.loads((self.run_dir / RESULT_FILES["json"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return (document.get("evidence") or {}) if isinstance(document, dict) else {}

    @property
    def stop_reason(self) -> str:
        return self.state.get("stop_reason", "")

    def top(self, n: int = 10) -> list[Record]:
        """The n highest-activating prompts, highest first: one per theme of near-copies (the same peak
        token, most of the text through it in common: services/search/themes.py), the theme's best,
        with `variants` (how many findings it stands for) and `activation_low`/`activation_high`."""
        return [theme_row(theme) for theme in self.themes(n)]

    def bottom(self, n: int = 10) -> list[Record]:
        """The n lowest-activating prompts, lowest first, one per theme like `top`."""
        return [theme_row(theme) for theme in self.themes(n, highest=False)]

    def themes(self, n: int = 10, highest: bool = True) -> list[Theme[Record]]:
        """The run's n best (or lowest) themes of near-copies: {"best": its best prompt as a table
        record, "variants", "low", "high"}, read from the record store (the kept table where the run
        has no store)."""
        path = self.run_dir / "records.sqlite"
        if not path.is_file():
            kept = self.state["top"] if highest else self.state["bottom"]
            return group_themes(kept, limit=n)
        store = RecordStore(path)
        try:
            return ranked_themes(store, n, highest=highest)
        finally:
            store.close()

    @property
    def records(self) -> list[StoredRecord]:
        """Every measured prompt: prompt, activation, per-token values, source, iteration."""
        store = RecordStore(self.run_dir / "records.sqlite")
        try:
            return list(store)
        finally:
            store.close()

    def to_dataframe(self):
        """The records as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.records)


def run_search(ctx: SearchContext, progress: ProgressDisplay | bool = True) -> SearchResult:
    """Run (or continue) run `ctx.run_id` until it ends or is stopped between batches.

    progress: True for a live progress line (terminal or notebook), False for none, or
    any object with `update(state, context)` and `close()`.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver  # loaded by a search, not by importing this module

    report = RichProgress() if progress is True else (progress or None)
    try:
        with open_run(ctx) as run_dir:  # writes the results files as the search returns
            connection = sqlite3.connect(run_dir / "checkpoints.sqlite", check_same_thread=False)
            graph = build_graph().compile(checkpointer=SqliteSaver(connection))
            config = {
                "configurable": {"thread_id": ctx.run_id},
                "recursion_limit": steps_per_iteration(ctx.max_attempts) + 5,
                "run_name": f"neuron-search L{ctx.layer} N{ctx.neuron}",
                "tags": ["neuron-search", f"layer:{ctx.layer}", f"neuron:{ctx.neuron}", f"model:{ctx.model}"],
                "metadata": {k: getattr(ctx, k) for k in ("model", "layer", "neuron", "llm", "run_id")},
            }
            try:
                state = _drive(graph, config, ctx, report, connection)
            finally:
                connection.close()
    finally:
        if report:  # after the results are written: a display that fails cannot cost them
            report.close()
    return SearchResult(run_dir, state, ctx)


def _drive(graph, config: dict, ctx: SearchContext, report, connection: sqlite3.Connection) -> SearchState:
    """One graph invocation per iteration: each is its own LangSmith trace, and a stop
    request (Ctrl-C, SIGTERM) takes effect between batches, never inside one."""
    pending = graph.get_state(config)
    inputs: dict | None = None if pending.values else {}
    state: SearchState = pending.values
    # No task left (not even one whose writes were saved before a kill): the run had ended.
    if pending.values and not pending.tasks:
        if stop_reason(state, ctx):
            return state
        # Resumed with a larger budget: it goes on from where it stopped, with stagnation_check
        # deciding again (under this run's settings) where the search goes next.
        graph.update_state(config, {"stop_reason": ""}, as_node="update_records")
    with _stop_requests() as stop:
        while True:
            _drop_older_checkpoints(connection, ctx.run_id)
            state = graph.invoke(inputs, config, context=ctx, interrupt_after=["stagnation_check"])
            inputs = None
            if report:
                report.update(state, ctx)
            if state.get("route") == "done" or stop.is_set():
                break
        if stop.is_set() and state.get("route") != "done":
            return {**state, "stop_reason": STOPPED_BY_USER}
        if graph.get_state(config).next:  # the explanation, after a finished search (--explain)
            state = graph.invoke(None, config, context=ctx)
    return state


def _drop_older_checkpoints(connection: sqlite3.Connection, thread_id: str) -> None:
    """Keep only the checkpoint the next iteration starts from (and those it will make).

    SqliteSaver keeps every checkpoint, about six per iteration (~11 KB a measured prompt on disk);
    a resume needs only the latest, and the record store holds the history. Freed pages are reused,
    so the file stays the size of one iteration's checkpoints."""
    latest = "SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ?"
    with connection:
        for table in ("checkpoints", "writes"):
            connection.execute(
                f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id < ({latest})", (thread_id, thread_id)
            )


@contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """The first Ctrl-C or SIGTERM asks to stop after the batch in flight; a second Ctrl-C stops at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum, frame) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

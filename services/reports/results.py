"""A run's results on disk: results.json, records.csv and report.html, and the summary tables."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.text import Text

from neuron_search.services.search.buckets import bucket_counts
from neuron_search.services.reports.display import records_table, stats_table
from neuron_search.services.reports.explanation_view import explanation_table
from neuron_search.services.errors import UserError
from neuron_search.services.storage.record_store import RecordStore
from neuron_search.services.storage.run_folder import read_settings
from neuron_search.services.reports.result_files import write_results
from neuron_search.state import SearchState


def saved_state(run_dir: Path) -> SearchState:
    """The latest checkpointed graph state of a run (empty if it never checkpointed)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = run_dir / "checkpoints.sqlite"
    if not path.is_file():
        return SearchState()
    connection = sqlite3.connect(path, check_same_thread=False)
    try:
        saved = SqliteSaver(connection).get_tuple({"configurable": {"thread_id": run_dir.name}})
    finally:
        connection.close()
    return saved.checkpoint["channel_values"] if saved else SearchState()


def _measured(run_dir: Path) -> tuple[np.ndarray, int]:
    """The activations of all measured prompts and the number of distinct prompts."""
    store = RecordStore(run_dir / "records.sqlite")
    try:
        values = [activation for _, activation in store.measured_prompts()]
        unique = store.unique_prompts()
    finally:
        store.close()
    return np.asarray(values, dtype=np.float64), unique


def write_run_results(run_dir: Path) -> dict[str, Path]:
    """(Re)write results.json, records.csv and report.html from the run's record store, with the
    neuron's dataset examples as the baseline when `run.py exemplars` saved them in the same
    results folder."""
    # Imported here: these modules load torch, which `run.py --list` has no need of.
    from neuron_search.services.dataset.exemplars import read_exemplars
    from neuron_search.services.evidence.evidence_block import read_evidence
    from neuron_search.services.explain.run_explanation import read_explanation

    settings = read_settings(run_dir, "to report")
    activations, _ = _measured(run_dir)
    buckets = bucket_counts(activations, settings["low_percentile"], settings["high_percentile"])
    dataset = read_exemplars(run_dir.parent, settings["model"], settings["layer"], settings["neuron"])
    store = RecordStore(run_dir / "records.sqlite")
    try:
        # A run saved before the store kept its counters has them only in its checkpoint.
        stats = store.stats() or dict(saved_state(run_dir).get("stats", {}))
        return write_results(
            run_dir,
            settings,
            stats,
            iter(store),
            bucket_counts=buckets,
            dataset=dataset,
            explanation=read_explanation(run_dir),
            evidence=read_evidence(run_dir),
        )
    finally:
        store.close()


def print_summary(result, console: Console) -> None:
    """The final tables: top and bottom prompts, what the neuron detects, then the statistics (every
    prompt, token and sentence as written: see services/reports/display.py)."""
    k = result.context.top_k
    activations, unique = _measured(result.run_dir)
    buckets = bucket_counts(activations, result.context.low_percentile, result.context.high_percentile)
    console.print(records_table(result.top(k), f"Top {k} prompts"))
    console.print(records_table(result.bottom(k), f"Bottom {k} prompts"))
    if result.explanation:
        console.print(explanation_table(result.explanation))
    console.print(stats_table(result.state["stats"], "Statistics", buckets=buckets, unique=unique))
    if result.stop_reason:
        console.print(Text(f"Stopped: {result.stop_reason}."))  # it may quote an error: never markup


def run_summary(run_dir: Path) -> tuple[str, ...]:
    """One row of `run.py --list`: id, model, layer, neuron, prompts, best, date. It writes nothing,
    and a run whose run.json is damaged is listed as damaged."""
    try:
        settings = read_settings(run_dir, "to list")
    except UserError:
        return (run_dir.name, "(damaged run.json: `run.py report` says how to recover)", "-", "-", "-", "-", "-")
    store = RecordStore.read_only(run_dir / "records.sqlite")
    measured, best = (0, None) if store is None else store.summary()
    if store is not None:
        store.close()
    return (
        run_dir.name,
        settings["model"],
        str(settings["layer"]),
        str(settings["neuron"]),
        str(measured),
        "-" if best is None else f"{best:.4f}",
        time.strftime("%Y-%m-%d %H:%M", time.localtime((run_dir / "run.json").stat().st_mtime)),
    )

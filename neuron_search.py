"""The Python API: run, resume and read a neuron search from a script or a notebook.

    from neuron_search import NeuronSearch
    result = NeuronSearch(model="gpt2", layer=9, neuron=840).run(iterations=200)
    result.best  # (prompt, activation)

`run.py` is a thin command-line layer over this module. Importing it loads no model.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from context import SearchContext
from graph import build_graph, steps_per_iteration
from nodes.seed import new_run_id
from nodes.stagnation_check import stop_reason
from services.display import ProgressDisplay, RichProgress
from services.errors import UserError
from services.proposer import resolve_llm
from services.record_store import RecordStore, StoredRecord, as_record
from state import Record, SearchState

# The settings that define what a run measures: a resumed run may not change them.
IDENTITY = ("model", "layer", "neuron", "position")



def _settings_file(run_dir: Path) -> Path:
    return run_dir / "run.json"


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
    def stop_reason(self) -> str:
        return self.state.get("stop_reason", "")

    def top(self, n: int = 10) -> list[Record]:
        """The n highest-activating prompts, highest first."""
        return self._ranked(n, reverse=True)

    def bottom(self, n: int = 10) -> list[Record]:
        """The n lowest-activating prompts, lowest first."""
        return self._ranked(n, reverse=False)

    def _ranked(self, n: int, reverse: bool) -> list[Record]:
        kept = self.state["top"] if reverse else self.state["bottom"]
        if n <= len(kept):
            return kept[:n]
        store = RecordStore(self.run_dir / "records.sqlite")
        try:
            return [as_record(r) for r in store.ranked(n, highest=reverse)]
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


class NeuronSearch:
    """A search for prompts that drive one neuron; every SearchContext field is a keyword."""

    def __init__(self, **settings: Any) -> None:
        known = {f.name for f in dataclasses.fields(SearchContext)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"Unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        self.settings = settings

    @classmethod
    def resume(cls, run_id: str, results_dir: str = "results", **settings: Any) -> NeuronSearch:
        """A search that continues run `run_id` with its saved settings; budgets, the LLM and
        the other knobs may be changed, what is measured (model, layer, neuron, position) not."""
        run_dir = Path(results_dir) / run_id
        if not _settings_file(run_dir).is_file():
            raise UserError(
                f"There is no run {run_id!r} in {results_dir}/ to resume. "
                "`python run.py --list` shows the runs there."
            )
        saved = json.loads(_settings_file(run_dir).read_text())
        _check_identity(run_id, saved, settings)
        saved.update(settings, run_id=run_id, results_dir=results_dir)
        saved["seed_prompts"] = tuple(saved["seed_prompts"])
        return cls(**saved)

    def context(self, **overrides: Any) -> SearchContext:
        settings = {**self.settings, **overrides}
        if not settings.get("run_id"):
            settings["run_id"] = new_run_id()
        self.settings["run_id"] = settings["run_id"]  # a second run() continues this one
        context = SearchContext(**settings)
        validate(context)
        return context

    def run(self, progress: ProgressDisplay | bool = True, **overrides: Any) -> SearchResult:
        """Run (or continue) the search; keyword overrides are settings such as iterations=200.

        progress: True for a live progress line (terminal or notebook), False for none, or
        any object with `update(state, context)` and `close()`.
        """
        from langgraph.checkpoint.sqlite import SqliteSaver

        ctx = self.context(**overrides)
        if ctx.llm.startswith("ollama:"):
            resolve_llm(ctx.llm)  # a server that is down is reported now, before any model loads
        run_dir = Path(ctx.results_dir) / ctx.run_id
        report = RichProgress() if progress is True else (progress or None)
        with _run_lock(run_dir), _storage_errors(run_dir):
            if _settings_file(run_dir).is_file():
                _check_identity(ctx.run_id, json.loads(_settings_file(run_dir).read_text()), dataclasses.asdict(ctx))
            _settings_file(run_dir).write_text(json.dumps(dataclasses.asdict(ctx), indent=2))
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
                state = self._drive(graph, config, ctx, report, connection)
            finally:
                if report:
                    report.close()
                connection.close()
                from services.runtime import release_run

                release_run(ctx, ctx.run_id)
        return SearchResult(run_dir, state, ctx)

    def _drive(self, graph, config: dict, ctx: SearchContext, report, connection: sqlite3.Connection) -> SearchState:
        """One graph invocation per iteration: each is its own LangSmith trace, and a stop
        request (Ctrl-C, SIGTERM) takes effect between batches, never inside one."""
        pending = graph.get_state(config)
        inputs: dict | None = None if pending.values else {}
        state: SearchState = pending.values
        # No task left (not even one whose writes were saved before a kill): the run had ended.
        if pending.values and not pending.tasks:
            if stop_reason(state, ctx):
                return state
            # Resumed with a larger budget: it goes on from where it stopped.
            graph.update_state(config, {"route": "continue", "stop_reason": ""}, as_node="stagnation_check")
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
                state = {**state, "stop_reason": "stopped by the user"}
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


def _check_identity(run_id: str, saved: dict, settings: dict) -> None:
    for name in IDENTITY:
        if name in settings and settings[name] != saved[name]:
            raise UserError(
                f"Run {run_id} was made with {name}={saved[name]!r}, not {settings[name]!r}: a resumed run "
                "measures the same neuron of the same model. Leave --model/--layer/--neuron/--position out "
                "to resume it, or start a new run."
            )


def validate(ctx: SearchContext) -> None:
    """Reject settings that cannot make sense, before anything is loaded."""
    problems = []
    if ctx.batch_size < 1:
        problems.append("--batch-size must be at least 1")
    if ctx.top_k < 1:
        problems.append("--top-k must be at least 1")
    if ctx.max_prompt_tokens < 1:
        problems.append("--max-prompt-tokens must be at least 1")
    for name in ("iterations", "max_prompts", "time_limit", "patience", "max_attempts"):
        if getattr(ctx, name) < 0:
            problems.append(f"--{name.replace('_', '-')} cannot be negative")
    if not 0.0 <= ctx.similarity_threshold <= 1.0:
        problems.append("--similarity-threshold must lie in [0, 1]")
    if not 0.0 <= ctx.low_percentile < ctx.high_percentile <= 100.0:
        problems.append("--bucket-percentiles must be LOW,HIGH with 0 <= LOW < HIGH <= 100")
    buckets = {b.strip() for b in ctx.filter_buckets.split(",") if b.strip()}
    if not buckets <= {"low", "mid", "high"}:
        problems.append("--filter-buckets takes low, mid and/or high, comma-separated")
    if ctx.position not in ("max", "last"):
        problems.append("--position is max or last")
    if ctx.temperature < 0:
        problems.append("--temperature cannot be negative")
    if problems:
        raise UserError("These settings cannot work: " + "; ".join(problems) + ". Fix them and run again.")


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """One process at a time per run folder: a second one would interleave batches."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / "lock", "w")
    except OSError as error:
        raise UserError(
            f"Cannot write to the results folder {run_dir} ({error.strerror}). "
            "Free some disk space, fix its permissions, or choose another folder with --results-dir."
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"Run {run_dir.name} is being run by another process right now. "
            "Wait for it to finish (or stop it), then resume."
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# How the OS and SQLite say that the results folder takes no more writes.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
_STORAGE_MESSAGES = ("disk is full", "readonly database", "disk i/o error", "unable to open database")


@contextmanager
def _storage_errors(run_dir: Path) -> Iterator[None]:
    """A full or read-only disk, before or during the search, ends in a message that says what was saved."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as error:
        if isinstance(error, OSError) and error.errno not in _STORAGE_ERRNOS:
            raise
        if isinstance(error, sqlite3.OperationalError) and not any(m in str(error).lower() for m in _STORAGE_MESSAGES):
            raise
        folder = "" if run_dir.parent == Path("results") else f" --results-dir {run_dir.parent}"
        raise UserError(
            f"Cannot write to the results folder {run_dir} ({error}): its disk is full or read-only. "
            f"{_saved(run_dir)} Free some disk space or make the folder writable, then continue with "
            f"`python run.py --resume {run_dir.name}{folder}`."
        ) from None


def _saved(run_dir: Path) -> str:
    path = run_dir / "records.sqlite"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            count, last = db.execute("SELECT COUNT(*), MAX(iteration) FROM records").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return f"What was measured so far is in {path}."
    if not count:
        return "Nothing had been measured yet."
    return f"The {count} prompts measured up to iteration {last} are saved in {path}."


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

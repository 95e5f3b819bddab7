"""A run's folder and its files: where it is, its id, run.json, its lock, and what a full disk means.

The run's lifecycle around these (runs/lifecycle.py: check, lock, write run.json, search, report,
release) is the one place that opens and closes a run; this module only names and keeps its files.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neuron_search.context import SearchContext
from neuron_search.services.errors import UserError
from neuron_search.services.storage.files import folder_lock, inside, write_atomic

# The settings that define what a run measures: a resumed run may not change them.
IDENTITY = ("model", "layer", "neuron", "position")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def run_id_for(ctx: SearchContext, thread_id: str | None) -> str:
    """The run's id: the one chosen, else one named after the LangGraph thread (so that Studio's
    server and the graph it runs agree on it), else a new one."""
    return ctx.run_id or (f"studio-{thread_id}" if thread_id else new_run_id())


def run_dir(ctx: SearchContext, run_id: str) -> Path:
    """The run's folder in ctx.results_dir; a run id that is not a plain name is a UserError."""
    return inside(ctx.results_dir, run_id)


def settings_file(folder: Path) -> Path:
    return folder / "run.json"


def read_settings(folder: Path, doing: str) -> dict[str, Any]:
    """A run's saved settings (run.json); a missing or damaged file is one clear UserError that says
    what it was needed for (`doing`: "to resume", "to report", ...)."""
    saved = saved_settings(folder)
    if saved is None:
        raise UserError(f"There is no run {folder.name!r} in {folder.parent}/ {doing}. `python run.py --list` shows the runs there.")
    return saved


def saved_settings(folder: Path) -> dict[str, Any] | None:
    """run.json's settings, None when there is none; a damaged one (empty, cut short, not an object)
    raises a UserError that says how to go on."""
    path = settings_file(folder)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(saved, dict) and all(name in saved for name in IDENTITY):
            return saved
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    raise UserError(
        f"Run {folder.name}'s settings file {path} is damaged (empty or not the JSON this tool writes), so the "
        "run cannot be resumed, reported or explained as it is; its measurements are still in records.sqlite. "
        f"Delete {path.name}, then start the run again under its id with the model, layer, neuron and position it "
        f"had (`python run.py --run-id {folder.name} --results-dir {folder.parent} --model M --layer L --neuron N`): "
        "it continues after the stored measurements."
    )


def write_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Write run.json whole or not at all: a full disk never leaves it empty."""
    write_atomic(settings_file(folder), json.dumps(settings, indent=2))


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """One search, report or explanation at a time per run folder (a second one in the same process is
    refused too): a second search would interleave batches, a report could read half a batch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"Cannot write to the results folder {folder} ({error.strerror}). "
            "Free some disk space, fix its permissions, or choose another folder with --results-dir."
        ) from None
    busy = (
        f"Run {folder.name} is being run right now, by another process or another search in this one (a second "
        "Studio run with the same run_id), or its report or explanation is being written. Wait for it to finish "
        "(or stop it), then try again."
    )
    with folder_lock(folder, busy):
        yield


# How the OS and SQLite say that the results folder takes no more writes.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
_STORAGE_MESSAGES = ("disk is full", "readonly database", "disk i/o error", "unable to open database")


@contextmanager
def storage_errors(run_dir: Path) -> Iterator[None]:
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

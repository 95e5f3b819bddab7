"""A sweep's folder: its plan (sweep.json), each neuron's status, and where each neuron's run lives.

    results/SWEEP_ID/sweep.json          what the sweep searches, with which settings
    results/SWEEP_ID/sweep.sqlite        each neuron's status, and the shared top prompts
    results/SWEEP_ID/neurons/N/          neuron N's run: a normal run folder (records, checkpoints, report)
    results/SWEEP_ID/index.html, .csv    the sweep's index (services/reports/sweep_index.py)

Only the process that schedules the sweep writes the statuses; the workers write their neurons'
run folders and the shared table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from neuron_search.services.errors import UserError
from neuron_search.services.storage.files import inside, write_atomic

PLAN_FILE = "sweep.json"
TABLE_FILE = "sweep.sqlite"

STATUS_SCHEMA = """
CREATE TABLE IF NOT EXISTS neuron_status (
    neuron INTEGER PRIMARY KEY,
    status TEXT NOT NULL,           -- pending, running, done or failed
    attempts INTEGER NOT NULL,      -- times a worker started it (a neuron resumed after a lost worker counts twice)
    worker INTEGER,                 -- process id of the worker running it, or that ran it
    best REAL,
    best_prompt TEXT,
    measured INTEGER,
    seconds REAL,
    error TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
"""


@dataclass
class SweepPlan:
    """What a sweep searches: these neurons of one layer, each a run with these settings."""

    sweep_id: str
    layer: int
    neurons: list[int]
    settings: dict[str, Any]  # NeuronSearch settings shared by every neuron (no neuron, run_id or results_dir)
    shared: bool = True  # every measured prompt updates every neuron's table of top prompts
    shared_top: int = 20  # rows kept per neuron in that table
    created: float = field(default_factory=time.time)


class NeuronStatus(NamedTuple):
    neuron: int
    status: str
    attempts: int
    worker: int | None
    best: float | None
    best_prompt: str | None
    measured: int | None
    seconds: float | None
    error: str


def sweep_dir(results_dir: str | Path, sweep_id: str) -> Path:
    """The sweep's folder in results_dir; a sweep id that is not a plain name is a UserError."""
    return inside(results_dir, sweep_id, "sweep id")


def neurons_dir(folder: Path) -> Path:
    """Where the neurons' run folders are: the results_dir of every neuron's run."""
    return folder / "neurons"


def write_plan(folder: Path, plan: SweepPlan) -> None:
    write_atomic(folder / PLAN_FILE, json.dumps(asdict(plan), indent=2))


def read_plan(folder: Path) -> SweepPlan:
    path = folder / PLAN_FILE
    if not path.is_file():
        raise UserError(
            f"There is no sweep {folder.name!r} in {folder.parent}/ ({path} is missing). "
            "Start one with `python run.py sweep --layer L --neurons SPEC`."
        )
    try:
        return SweepPlan(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        raise UserError(
            f"Sweep {folder.name}'s plan {path} is damaged (empty or not the JSON this tool writes), so the sweep "
            "cannot be resumed; each neuron's measurements are still in its run folder under "
            f"{folder / 'neurons'}/. Start a new sweep of the neurons still to do."
        ) from None


class StatusBook:
    """Each neuron's status in the sweep's sqlite file, written by the scheduling process."""

    def __init__(self, folder: Path) -> None:
        self.db = sqlite3.connect(folder / TABLE_FILE, timeout=120, check_same_thread=False)
        self.db.executescript(STATUS_SCHEMA)

    def add(self, neurons: list[int]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO neuron_status (neuron, status, attempts, updated) VALUES (?, 'pending', 0, ?)",
                [(n, time.time()) for n in neurons],
            )

    def started(self, neuron: int, worker: int) -> None:
        with self.db:
            self.db.execute(
                "UPDATE neuron_status SET status = 'running', attempts = attempts + 1, worker = ?, error = '', updated = ? "
                "WHERE neuron = ?",
                (worker, time.time(), neuron),
            )

    def finished(self, neuron: int, outcome: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "UPDATE neuron_status SET status = 'done', best = ?, best_prompt = ?, measured = ?, seconds = ?, updated = ? "
                "WHERE neuron = ?",
                (outcome["best"], outcome["best_prompt"], outcome["measured"], outcome["seconds"], time.time(), neuron),
            )

    def set(self, neuron: int, status: str, error: str = "") -> None:
        with self.db:
            self.db.execute(
                "UPDATE neuron_status SET status = ?, error = ?, updated = ? WHERE neuron = ?", (status, error, time.time(), neuron)
            )

    def interrupted(self) -> None:
        """Neurons left running by a sweep that stopped: pending again (they resume from their checkpoints)."""
        with self.db:
            self.db.execute("UPDATE neuron_status SET status = 'pending' WHERE status = 'running'")

    def all(self) -> list[NeuronStatus]:
        rows = self.db.execute(
            "SELECT neuron, status, attempts, worker, best, best_prompt, measured, seconds, error FROM neuron_status ORDER BY neuron"
        )
        return [NeuronStatus(*row) for row in rows]

    def close(self) -> None:
        self.db.close()

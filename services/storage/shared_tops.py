"""Every prompt a sweep measures, for every neuron of the sweep: a bounded table of each neuron's top prompts.

One forward pass computes the whole layer, so a prompt measured while searching neuron A is also
a measurement of neurons B, C, ...: it is kept in B's table when it ranks in B's top k. Only k rows
per neuron are kept (never every prompt x every neuron), and a neuron's search starts from its rows.

The table is an SQLite file in the sweep's folder that every worker writes to (each write one short
transaction), so on a cluster that folder must be on a filesystem every worker reaches.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS shared_neurons (neuron INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS shared_settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS shared_tops (
    neuron INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    activation REAL NOT NULL,
    found_for INTEGER NOT NULL,  -- the neuron whose search measured the prompt
    PRIMARY KEY (neuron, prompt)
);
"""


class SharedTop(NamedTuple):
    prompt: str
    activation: float
    found_for: int


class SharedTops:
    """The sweep's table of top prompts per neuron (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Workers write at once: a writer waits for the others' short transactions.
        self.db = sqlite3.connect(self.path, timeout=120, check_same_thread=False, isolation_level=None)
        self.db.executescript(SCHEMA)
        self._neurons: list[int] | None = None
        self._lock = threading.Lock()  # searches in threads of one process share one connection

    @classmethod
    def create(cls, path: str | Path, neurons: Sequence[int], k: int) -> SharedTops:
        table = cls(path)
        with table._transaction():
            table.db.executemany("INSERT OR IGNORE INTO shared_neurons VALUES (?)", [(int(n),) for n in neurons])
            table.db.execute("INSERT OR REPLACE INTO shared_settings VALUES ('k', ?)", (int(k),))
        return table

    @property
    def neurons(self) -> list[int]:
        """The sweep's neurons, whose activations every measured prompt updates."""
        if self._neurons is None:
            self._neurons = [n for (n,) in self.db.execute("SELECT neuron FROM shared_neurons ORDER BY neuron")]
        return self._neurons

    @property
    def k(self) -> int:
        row = self.db.execute("SELECT value FROM shared_settings WHERE key = 'k'").fetchone()
        return int(row[0]) if row else 0

    def record(self, prompts: Sequence[str], values: np.ndarray, found_for: int) -> int:
        """Keep each prompt in the table of every neuron (the columns of `values`, in `neurons`' order)
        whose top k it enters; NaN (a prompt that could not be measured) is never kept. Returns the
        rows written."""
        k, neurons = self.k, self.neurons
        if not prompts or not neurons or k < 1:
            return 0
        with self._transaction():
            floor = {
                n: (count, low)
                for n, count, low in self.db.execute("SELECT neuron, COUNT(*), MIN(activation) FROM shared_tops GROUP BY neuron")
            }
            rows = []
            for j, neuron in enumerate(neurons):
                count, low = floor.get(neuron, (0, -math.inf))
                column = values[:, j]
                for i in np.argsort(-np.nan_to_num(column, nan=-np.inf))[:k]:
                    value = float(column[i])
                    if math.isfinite(value) and (count < k or value > low):
                        rows.append((neuron, prompts[i], value, int(found_for)))
            self.db.executemany(
                "INSERT INTO shared_tops VALUES (?, ?, ?, ?) "
                "ON CONFLICT (neuron, prompt) DO UPDATE SET activation = MAX(activation, excluded.activation)",
                rows,
            )
            for neuron in {row[0] for row in rows}:
                self.db.execute(
                    "DELETE FROM shared_tops WHERE neuron = ? AND rowid NOT IN "
                    "(SELECT rowid FROM shared_tops WHERE neuron = ? ORDER BY activation DESC, rowid LIMIT ?)",
                    (neuron, neuron, k),
                )
        return len(rows)

    def top(self, neuron: int, n: int | None = None) -> list[SharedTop]:
        """The neuron's best known prompts, highest first."""
        with self._lock:
            rows = self.db.execute(
                "SELECT prompt, activation, found_for FROM shared_tops WHERE neuron = ? ORDER BY activation DESC, rowid LIMIT ?",
                (int(neuron), -1 if n is None else int(n)),
            ).fetchall()
        return [SharedTop(*row) for row in rows]

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT: the write lock is taken at the start, so two writers never
        both read the old floors and then both write."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

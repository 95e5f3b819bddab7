"""The run's append-only history: every measured prompt, in one SQLite file.

The graph state keeps only the current batch and the top/bottom records; everything else is
here. Rows are keyed by (iteration, slot), so replaying a batch after a crash writes nothing twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

from neuron_search.state import Measurement, Source, Stats

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    iteration  INTEGER NOT NULL,
    slot       INTEGER NOT NULL,
    source     TEXT    NOT NULL,
    prompt     TEXT    NOT NULL,
    activation REAL,
    token      TEXT    NOT NULL,
    tokens     TEXT    NOT NULL,
    vals       TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    xent       REAL,
    peak       INTEGER,
    PRIMARY KEY (iteration, slot)
);
CREATE TABLE IF NOT EXISTS progress (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    stats TEXT NOT NULL
);
"""


class StoredRecord(TypedDict):
    iteration: int
    slot: int
    source: Source
    prompt: str
    activation: float | None  # None when the prompt could not be measured
    token: str  # the peak token: where the measured value was read
    tokens: list[str]
    values: list[float]
    error: str
    xent: float | None  # cross-entropy under the subject model, where it was measured
    peak: int | None  # index into tokens of the peak token (None for failed prompts and old runs)


class RecordStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._create()

    @classmethod
    def read_only(cls, path: Path) -> RecordStore | None:
        """The store at `path` opened for reading, creating nothing; None where there is none."""
        if not path.is_file():
            return None
        store = cls.__new__(cls)
        store.path = path
        # With no write-ahead log beside it the file is whole: reading it as immutable creates no -wal or
        # -shm file (a read-only connection to a WAL database would). With one, a run may be writing.
        live = Path(f"{path}-wal").exists()
        store._db = sqlite3.connect(f"file:{path}?{'mode=ro' if live else 'immutable=1'}", uri=True, check_same_thread=False)
        return store

    def _create(self) -> None:
        self._db.executescript(_SCHEMA)
        # Columns added since the first stores were written: an old run's rows read them as NULL.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
        for column, kind in (("xent", "REAL"), ("peak", "INTEGER")):
            if column not in columns:
                self._db.execute(f"ALTER TABLE records ADD COLUMN {column} {kind}")
        self._db.commit()

    def append(self, iteration: int, sources: list[Source], batch: list[Measurement], stats: Stats | None = None) -> None:
        """Write one measured batch (who made each prompt, and its measurement) in a single transaction,
        with the run's counters after it: reports then need nothing but this file, however the run was made."""
        rows = [
            (
                iteration,
                slot,
                source,
                m["prompt"],
                None if m["error"] else m["activation"],
                m["tokens"][m["peak"]] if m["tokens"] else "",
                json.dumps(m["tokens"]),
                json.dumps(m["values"]),
                m["error"],
                m.get("xent"),
                m["peak"] if m["tokens"] else None,
            )
            for slot, (source, m) in enumerate(zip(sources, batch, strict=True))
        ]
        with self._db:
            # A batch replayed after a crash finds its own rows (same slots, same prompts) and adds
            # nothing; a different prompt under a stored key would be lost, so it is an error instead.
            stored = dict(self._db.execute("SELECT slot, prompt FROM records WHERE iteration = ?", (iteration,)))
            clashes = [row[1] for row in rows if stored.get(row[1], row[3]) != row[3]]
            if clashes:
                raise RuntimeError(
                    f"{self.path} already holds other prompts at iteration {iteration} (slots {clashes}): "
                    "refusing to drop the new measurements."
                )
            self._db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            if stats is not None:
                self._db.execute("INSERT OR REPLACE INTO progress VALUES (1, ?)", (json.dumps(stats),))

    def last_iteration(self) -> int | None:
        """The latest iteration with a stored row (None before the first)."""
        return self._db.execute("SELECT MAX(iteration) FROM records").fetchone()[0]

    def stats(self) -> dict[str, int]:
        """The run's counters after its latest batch ({} before the first)."""
        row = self._db.execute("SELECT stats FROM progress").fetchone()
        return json.loads(row[0]) if row else {}

    def summary(self) -> tuple[int, float | None]:
        """How many prompts were measured, and the highest activation (None before the first)."""
        return self._db.execute("SELECT COUNT(activation), MAX(activation) FROM records").fetchone()

    def __iter__(self) -> Iterator[StoredRecord]:
        for row in self._db.execute("SELECT * FROM records ORDER BY iteration, slot"):
            yield self._record(row)

    @staticmethod
    def _record(row: tuple) -> StoredRecord:
        return StoredRecord(
            iteration=row[0],
            slot=row[1],
            source=row[2],
            prompt=row[3],
            activation=row[4],
            token=row[5],
            tokens=json.loads(row[6]),
            values=json.loads(row[7]),
            error=row[8],
            xent=row[9],
            peak=row[10],
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def unique_prompts(self) -> int:
        return self._db.execute("SELECT COUNT(DISTINCT prompt) FROM records").fetchone()[0]

    def measured_prompts(self) -> list[tuple[str, float]]:
        """(prompt, activation) of every measured prompt, in order; unlike iterating, decodes no per-token JSON."""
        query = "SELECT prompt, activation FROM records WHERE activation IS NOT NULL ORDER BY iteration, slot"
        return self._db.execute(query).fetchall()

    def best(self) -> StoredRecord | None:
        """The highest-activating record, with its per-token values (None before the first)."""
        row = self._db.execute(
            "SELECT * FROM records WHERE activation IS NOT NULL ORDER BY activation DESC, iteration, slot LIMIT 1"
        ).fetchone()
        return self._record(row) if row else None

    def by_activation(self, limit: int, highest: bool = True) -> list[StoredRecord]:
        """Up to `limit` measured records, highest (or lowest) activation first, then in the order measured."""
        order = "DESC" if highest else "ASC"
        query = f"SELECT * FROM records WHERE activation IS NOT NULL ORDER BY activation {order}, iteration, slot LIMIT ?"
        return [self._record(row) for row in self._db.execute(query, (limit,)).fetchall()]

    def best_for_weight(self, weight: float) -> StoredRecord | None:
        """The measured record with the lowest -activation + weight * cross-entropy (a gradient population
        slot's rule, services/search/population.py): for a weight of 0 the highest activation, else
        among the records whose cross-entropy was measured."""
        if weight == 0:
            query = "SELECT * FROM records WHERE activation IS NOT NULL ORDER BY -activation, iteration, slot LIMIT 1"
            row = self._db.execute(query).fetchone()
        else:
            row = self._db.execute(
                "SELECT * FROM records WHERE activation IS NOT NULL AND xent IS NOT NULL "
                "ORDER BY ? * xent - activation, iteration, slot LIMIT 1",
                (weight,),
            ).fetchone()
        return self._record(row) if row else None

    def close(self) -> None:
        self._db.close()


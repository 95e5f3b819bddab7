"""Which tokens a neuron peaks on: counted over a set of measured prompts, from their records alone.

A record (a run's stored record, or a real snippet of exemplars.json) holds its tokens, the neuron's
value at each, and `peak`, the index of the token its activation was read at (the highest token
with `--position max`, the last with `--position last`). Over a set of records this counts, per
token text:

- at the peak: how many records peak on it, and the mean (and highest) activation at those peaks;
- right before the peak: how many records have it as the token just before their peak (a record
  that peaks on its first token has none, and is counted in `peak_first`).

Tokens are compared as their text, exactly (" (" and "(" are two tokens). Rows are ordered by
count, then by mean activation, then by text, so the same records give the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

ROWS = 10


class PeakRow(TypedDict):
    token: str
    count: int  # records that peak on this token
    mean_activation: float  # their mean activation at the peak
    max_activation: float


class BeforeRow(TypedDict):
    token: str
    count: int  # records whose token right before the peak is this one


class PeakTable(TypedDict):
    label: str  # what the records are, in words
    records: int  # how many records were counted (measured ones with a peak token)
    at_peak: list[PeakRow]
    before_peak: list[BeforeRow]
    peak_first: int  # records that peak on their first token: nothing before the peak


def peak_table(records: Iterable[Mapping[str, Any]], label: str, rows: int = ROWS) -> PeakTable:
    """The peak-token table of `records` (see the module docstring); at most `rows` rows in each list.
    Records without an activation (failed) or without tokens are skipped."""
    at: dict[str, list[float]] = {}
    before: dict[str, int] = {}
    counted = first = 0
    for record in records:
        where = _peak(record)
        activation = record.get("activation")
        if where is None or activation is None or not math.isfinite(float(activation)):
            continue
        tokens = record["tokens"]
        counted += 1
        at.setdefault(tokens[where], []).append(float(activation))
        if where == 0:
            first += 1
        else:
            before[tokens[where - 1]] = before.get(tokens[where - 1], 0) + 1
    peak_rows = [
        PeakRow(token=token, count=len(values), mean_activation=sum(values) / len(values), max_activation=max(values))
        for token, values in at.items()
    ]
    peak_rows.sort(key=lambda row: (-row["count"], -row["mean_activation"], row["token"]))
    before_rows = sorted((BeforeRow(token=t, count=n) for t, n in before.items()), key=lambda row: (-row["count"], row["token"]))
    return PeakTable(label=label, records=counted, at_peak=peak_rows[:rows], before_peak=before_rows[:rows], peak_first=first)


def _peak(record: Mapping[str, Any]) -> int | None:
    """The index of the record's peak token: its `peak`, or for a record stored before peaks were
    kept, the token its `token` names at its highest value."""
    tokens = record.get("tokens") or []
    if not tokens:
        return None
    peak = record.get("peak")
    if isinstance(peak, int) and 0 <= peak < len(tokens):
        return peak
    values = record.get("values") or []
    named = [i for i, t in enumerate(tokens) if t == record.get("token") and i < len(values) and math.isfinite(values[i])]
    return max(named, key=lambda i: (values[i], -i)) if named else None

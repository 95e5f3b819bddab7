"""Ten findings, not one finding with ten tails.

With causal attention, tokens after a prompt's peak cannot change the activation at the peak: with
`--position max`, a prompt and the same prompt with other words after its peak are one finding.
Left alone, mutations that append or edit words after the peak fill the top-k with copies of a few
findings. Records that share the text through the peak and the activation (to four decimals) are
folded into one, in its shortest form, wherever prompts are ranked: the top and bottom tables, what
the LLM is shown, `result.top()`, the report and results.json. (With `--position last` the peak is the last token, so a finding is
the whole prompt and only exact repeats fold.)

Where prompts are shown to a person (the tables, the report, results.json, `result.top()`), findings
are folded once more, into themes of near-copies (services/search/themes.py): `ranked_themes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from neuron_search.services.search.themes import Theme, group_themes
from neuron_search.services.storage.record_store import RecordStore, StoredRecord
from neuron_search.state import Record

R = TypeVar("R", Record, StoredRecord)

# Where themes are ranked (services/search/themes.py), at least this many measured prompts per theme
# shown are read, and more until as many themes are found: a theme's variants and range are counted
# among the prompts read.
THEME_ROOM = 25


def finding_key(record: Record | StoredRecord) -> tuple[str, float]:
    """A table record's finding, or a stored record's (its tokens through its peak); a record that
    knows neither (a run stored before peaks were kept) is its own finding."""
    finding = record.get("finding")
    if finding is None:
        peak = record.get("peak")
        finding = record["prompt"] if peak is None else "".join(record["tokens"][: peak + 1])
    return finding, round(record["activation"], 4)


def distinct_findings(records: Iterable[R]) -> list[R]:
    """The records in their order, one per finding (at its first place), each in its shortest form."""
    shortest: dict[tuple[str, float], Record] = {}
    for record in records:
        key = finding_key(record)
        if key not in shortest or len(record["prompt"]) < len(shortest[key]["prompt"]):
            shortest[key] = record
    return list(shortest.values())


def as_record(stored: StoredRecord) -> Record:
    """A stored measured prompt as a row of the top/bottom tables."""
    peak = stored.get("peak")
    return Record(
        prompt=stored["prompt"],
        activation=stored["activation"],
        token=stored["token"],
        source=stored["source"],
        iteration=stored["iteration"],
        finding=stored["prompt"] if peak is None else "".join(stored["tokens"][: peak + 1]),
    )


def ranked_findings(store: RecordStore, k: int, highest: bool = True) -> list[Record]:
    """The store's k distinct findings with the highest (or lowest) activations, in that order, each
    in its shortest form."""
    limit = 4 * k
    while True:  # read more rows until k findings are found or the store is exhausted
        rows = store.by_activation(limit, highest)
        findings = distinct_findings([as_record(row) for row in rows])
        if len(findings) >= k or len(rows) < limit:
            return findings[:k]
        limit *= 4


def ranked_themes(store: RecordStore, k: int, highest: bool = True, room: int = THEME_ROOM) -> list[Theme[Record]]:
    """The store's k best (or lowest) themes, in that order, each best as a table record: its top
    `room * k` measured prompts (more while fewer than k themes are among them and the store has more),
    folded into findings, then into themes on their tokens. A theme's variants count its findings
    among the prompts read."""
    limit = max(room * k, 1)
    while True:
        rows = store.by_activation(limit, highest)
        themes = group_themes(distinct_findings(rows), limit=k)
        if len(themes) >= k or len(rows) < limit:
            return [Theme(best=as_record(t["best"]), variants=t["variants"], low=t["low"], high=t["high"]) for t in themes[:k]]
        limit *= 4

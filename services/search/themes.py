"""One prompt per theme: near-copies of one prompt are one theme, wherever top prompts are shown.

Folding findings (services/search/findings.py) removes copies that differ only after the peak. A
search's top is still often one prompt in many costumes: the same text with a word dropped, doubled
or swapped before the peak. A *theme* is such a family, shown by its best-ranked member with how many
variants it stands for and their activation range.

The rule (`near_copies`): two records are near-copies when they peak on the same token and their
text through the peak, split into words (`units`: runs of word characters or single other
characters, each with the whitespace before it), matches with a difflib ratio of at least THRESHOLD
(2 * matched units / all units). Words, not model tokens: a table `Record` has no tokens, only its
text through the peak (`finding`), so the same words are used for a `StoredRecord` too
("".join(tokens[:peak + 1]) is that same text) and a run's themes are the same whichever record
type is grouped. Dropping or doubling one word of a 20-word prompt keeps a ratio near 0.97; two
different prompts that share the peak token score far below (the threshold and its neighbours are
measured in tests/test_themes.py and in the helper's report).

`group_themes` is greedy: records come in ranked best first; each joins the first theme whose best it
near-copies, else starts a new one. O(records * themes) comparisons.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Generic, TypedDict, TypeVar

from neuron_search.services.storage.record_store import StoredRecord
from neuron_search.state import Record

R = TypeVar("R", Record, StoredRecord)

# Near-copies match at least this share of their words through the peak (difflib ratio).
THRESHOLD = 0.75

_UNIT = re.compile(r"\s*(?:\w+|[^\w\s])|\s+$")


class Theme(TypedDict, Generic[R]):
    """Near-copies of one prompt: the best-ranked record, how many records it stands for (itself
    included) and the activation range over them."""

    best: R
    variants: int
    low: float
    high: float


def through_peak(record: Record | StoredRecord) -> str:
    """The record's text through its peak token: a table record's `finding`, a stored record's tokens
    through its peak; the whole prompt where neither is known."""
    finding = record.get("finding")
    if finding is not None:
        return finding
    peak = record.get("peak")
    tokens = record.get("tokens")
    if peak is not None and tokens:
        return "".join(tokens[: peak + 1])
    return record["prompt"]


def units(text: str) -> list[str]:
    """Words and single punctuation marks, each with the whitespace before it (so "a (" and "a(" differ)."""
    return _UNIT.findall(text)


def similarity(a: Record | StoredRecord, b: Record | StoredRecord) -> float:
    """difflib's ratio of the two records' words through the peak: 1.0 for the same text, 0.0 for none shared."""
    ua, ub = units(through_peak(a)), units(through_peak(b))
    if not ua and not ub:
        return 1.0
    return SequenceMatcher(None, ua, ub, autojunk=False).ratio()


def near_copies(a: Record | StoredRecord, b: Record | StoredRecord, threshold: float = THRESHOLD) -> bool:
    """Whether two records are one theme: the same peak token and similar text through the peak."""
    return a["token"] == b["token"] and similarity(a, b) >= threshold


def group_themes(records: Sequence[R], threshold: float = THRESHOLD, limit: int | None = None) -> list[Theme[R]]:
    """The records' themes, in the order of their best records (the input's order, best first).

    Each record joins the first theme whose best it near-copies, else starts a new theme. With
    `limit`, no theme past the first `limit` is started, but later records still join (and widen)
    the themes already found; records that start none are left out."""
    themes: list[Theme[R]] = []
    for record in records:
        activation = _activation(record)
        for theme in themes:
            if near_copies(theme["best"], record, threshold):
                theme["variants"] += 1
                if activation is not None:  # NaN where no member had one: min/max would keep it
                    theme["low"] = activation if math.isnan(theme["low"]) else min(theme["low"], activation)
                    theme["high"] = activation if math.isnan(theme["high"]) else max(theme["high"], activation)
                break
        else:
            if limit is not None and len(themes) >= limit:
                continue
            value = activation if activation is not None else math.nan
            themes.append(Theme(best=record, variants=1, low=value, high=value))
    return themes


def _activation(record: Record | StoredRecord) -> float | None:
    value = record.get("activation")
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)

"""One prompt per theme: near-copies of one prompt are one theme, wherever top prompts are shown.

Folding findings (services/search/findings.py) removes copies that differ only after the peak. A
search's top is still often one prompt in many costumes: the same text with a word dropped, doubled
or swapped before the peak. A *theme* is such a family, shown by its best-ranked member with how many
variants it stands for and their activation range.

The rule (`near_copies`): two records are near-copies when they peak on the same token and their
text through the peak matches with a difflib ratio (2 * matched units / all units) of at least
THRESHOLD. The units are the model's tokens through the peak when both records carry them (a
`StoredRecord`: its `tokens` and `peak`); otherwise (a table `Record` has only its text through the
peak, `finding`) the characters of that text: no tokenizer is loaded here. Both the report's tables
and `result.top()` group stored records, so they draw the same themes.

Measured on the top 50 findings of eight 2,000-prompt gradient runs of the bundled Gemma (layer 9),
labelled by hand into families, and 44 hand-written distinct prompts sharing those runs' peak tokens
(the helper's report has the script and the neighbouring thresholds): at 0.70 on tokens, 95.8% of
same-family pairs fold, no distinct pair does, greedy grouping gives one theme for six of the eight
runs' top 10s and keeps all 44 distinct prompts apart. Characters at 0.70 fold 94.3% and one
distinct pair ("The value of" / "Using the value of", a word inserted before the peak).

`group_themes` is greedy: records come in ranked best first; each joins the first theme whose best it
near-copies, else starts a new one. O(records * themes) comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Generic, TypedDict, TypeVar

from neuron_search.services.storage.record_store import StoredRecord
from neuron_search.state import Record

R = TypeVar("R", Record, StoredRecord)

# Near-copies match at least this share of their units through the peak (difflib ratio).
THRESHOLD = 0.70


class Theme(TypedDict, Generic[R]):
    """Near-copies of one prompt: the best-ranked record, how many of the input's records it stands for
    (itself included: findings, where the input was folded into findings first, as the tables do) and
    the activation range over them (NaN where none had an activation)."""

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


def peak_token(record: Record | StoredRecord) -> str:
    """The token the record peaks on: its `token`, or (a real snippet's `Measurement`) its tokens at its peak."""
    token = record.get("token")
    if token is None:
        tokens, peak = record.get("tokens"), record.get("peak")
        token = tokens[peak] if tokens and peak is not None else ""
    return token


def tokens_through_peak(record: Record | StoredRecord) -> list[str] | None:
    """The model's tokens through the peak, where the record carries them (None for a table record)."""
    peak = record.get("peak")
    tokens = record.get("tokens")
    return list(tokens[: peak + 1]) if peak is not None and tokens else None


def units(a: Record | StoredRecord, b: Record | StoredRecord) -> tuple[Sequence[str], Sequence[str]]:
    """What the two records are compared on: their tokens through the peak when both carry them, else
    the characters of their text through the peak."""
    ta, tb = tokens_through_peak(a), tokens_through_peak(b)
    if ta is not None and tb is not None:
        return ta, tb
    return through_peak(a), through_peak(b)


def similarity(a: Record | StoredRecord, b: Record | StoredRecord) -> float:
    """difflib's ratio of the two records' units through the peak: 1.0 for the same, 0.0 for none shared."""
    ua, ub = units(a, b)
    if not ua and not ub:
        return 1.0
    return SequenceMatcher(None, ua, ub, autojunk=False).ratio()


def near_copies(a: Record | StoredRecord, b: Record | StoredRecord, threshold: float = THRESHOLD) -> bool:
    """Whether two records are one theme: the same peak token and similar text through the peak."""
    if peak_token(a) != peak_token(b):
        return False
    ua, ub = units(a, b)
    if not ua and not ub:
        return True
    matcher = SequenceMatcher(None, ua, ub, autojunk=False)
    # The cheap upper bounds first: most pairs of different prompts stop there.
    return matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold


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


def theme_row(theme: Theme[R]) -> R:
    """The theme's best record with `variants`, `activation_low` and `activation_high` added (a new
    dict: the record itself is left as it was)."""
    return {**theme["best"], "variants": theme["variants"], "activation_low": theme["low"], "activation_high": theme["high"]}  # type: ignore[return-value]

"""Which records the explainer sees, which are held out to score it, and how an example is shown.

A held-out prompt must be new to the explainer, or scoring measures memory instead of the
explanation. "New" is stricter than a different string: with causal attention, a prompt and the
same prompt with other words after its peak have the same activation at the peak (one finding,
services/search/findings.py), so two records clash when they share the prompt text or the text
through the peak token.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence

from neuron_search.services.search.findings import finding_key
from neuron_search.services.storage.record_store import StoredRecord

MARK_FRACTION = 0.3  # tokens at or above this fraction of the example's own max are marked (delphi)
SCALE = 10  # activations are shown as integers 0..SCALE relative to the run's max


def split_examples(
    records: Iterable[StoredRecord],
    n_explain_top: int = 10,
    n_explain_sample: int = 10,
    n_holdout: int = 20,
    seed: int = 0,
) -> tuple[list[StoredRecord], list[StoredRecord], list[StoredRecord]]:
    """(explainer examples, held-out high, held-out low), pairwise disjoint by prompt and finding.

    Measured records are ranked by activation and folded: a record that shares its prompt or its
    finding with a better-ranked one (or with any record folded into one) is dropped, so each
    finding appears once, in its shortest form. The explainer sees the `n_explain_top` highest, then one record drawn from each of
    `n_explain_sample` equal-count quantile bins of the rest, so it also sees what weaker firing
    looks like. What remains is split at its median: held-out high are the (up to) `n_holdout`
    highest of the upper half, held-out low are `n_holdout` drawn at random from the lower half, so
    the two never meet and "low" is the ordinary, not only the very lowest. The explainer is
    served first; a small run leaves fewer held-out prompts (callers report the sizes).
    """
    rng = random.Random(seed)
    ranked = _distinct(records)
    top, rest = ranked[:n_explain_top], ranked[n_explain_top:]
    sampled = _quantile_sample(rest, n_explain_sample, rng)
    high, low = held_out(rest, sampled, n_holdout, rng)
    return top + sampled, high, low


def held_out(
    rest: Sequence[StoredRecord], sampled: Sequence[StoredRecord], n_holdout: int, rng: random.Random
) -> tuple[list[StoredRecord], list[StoredRecord]]:
    """(held-out high, held-out low) from the ranked records `rest` less those `sampled` for the
    explainer: what remains is split at its median; high are the (up to) `n_holdout` highest of the
    upper half, low `n_holdout` drawn with `rng` from the lower half, ranked."""
    chosen = {id(r) for r in sampled}
    remaining = [r for r in rest if id(r) not in chosen]
    half = len(remaining) // 2
    high = list(remaining[: min(n_holdout, half)])
    lower = remaining[len(remaining) - half :]
    low = sorted(rng.sample(lower, min(n_holdout, len(lower))), key=_rank)
    return high, low


def _rank(record: StoredRecord) -> tuple[float, int, str, int, int]:
    """Highest activation first; among equals the shortest prompt, then the text, then the earliest
    measured: a total order, so the split does not depend on the order records are read in."""
    return -record["activation"], len(record["prompt"]), record["prompt"], record["iteration"], record["slot"]


def _distinct(records: Iterable[StoredRecord]) -> list[StoredRecord]:
    """Measured records, best first, keeping one of any that share a prompt or a finding."""
    seen: set[str] = set()
    kept: list[StoredRecord] = []
    for record in sorted((r for r in records if r["activation"] is not None), key=_rank):
        keys = {record["prompt"], finding_key(record)[0]}
        if seen.isdisjoint(keys):
            kept.append(record)
        # A clashing record's keys are still marked: it may bridge two strings of one group.
        seen |= keys
    return kept


def _quantile_sample(ranked: Sequence[StoredRecord], bins: int, rng: random.Random) -> list[StoredRecord]:
    """One record drawn from each of `bins` equal-count slices of `ranked` (all of them if fewer)."""
    if bins <= 0:
        return []
    if len(ranked) <= bins:
        return list(ranked)
    edges = [len(ranked) * i // bins for i in range(bins + 1)]
    return [ranked[rng.randrange(start, end)] for start, end in zip(edges, edges[1:])]


def format_example(record: StoredRecord, scale_max: float) -> str:
    """The example as the explainer reads it (delphi's format): its text with the tokens at or
    above 0.3 x its own max wrapped in <<...>> (runs merged), then `Activations: ("tok" : n), ...`
    for those tokens on a 0-10 scale where 10 is `scale_max`, the run's max."""
    tokens, values = record["tokens"], record["values"]
    own_max = max(values, default=0.0)
    if not tokens or own_max <= 0:
        return f"{record['prompt']}\nActivations: none"
    marked = [v >= MARK_FRACTION * own_max for v in values]
    text = "".join(_marked_text(tokens, marked))
    pairs = ", ".join(
        f"({json.dumps(t, ensure_ascii=False)} : {_scaled(v, scale_max)})"
        for t, v, m in zip(tokens, values, marked)
        if m
    )
    return f"{text}\nActivations: {pairs}"


def _marked_text(tokens: Sequence[str], marked: Sequence[bool]) -> Iterable[str]:
    """The tokens with each run of marked ones opened by << and closed by >>."""
    previous = False
    for token, mark in zip(tokens, marked):
        if mark != previous:
            yield "<<" if mark else ">>"
        yield token
        previous = mark
    if previous:
        yield ">>"


def _scaled(value: float, scale_max: float) -> int:
    """`value` as an integer 0..10 of `scale_max`; negatives (and a non-positive scale) give 0."""
    if scale_max <= 0:
        return 0
    return min(SCALE, max(0, round(SCALE * value / scale_max)))

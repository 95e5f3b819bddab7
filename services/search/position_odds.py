"""Where a swap is likely to raise the lead: its odds by distance before the peak, learned in the run.

The lead's children each change one token. Whether a child beat its parent says how promising its
position was. Positions are grouped by their distance before the parent's peak (0, the peak token
itself; 1; 2-3; 4-7; 8-15; 16-31; 32 and more), since a prompt's length and its peak move during a
run while the distance keeps its meaning. Over 13 runs on 8 neurons of the bundled Gemma (bench/RESULTS.md
section 25), with positions drawn uniformly, a swap of the peak token itself never beat the lead (0 of
1,795), a swap 1-3 tokens before it did for 1-2% of children, and one 8 or more tokens before it for
10-20%. The odds here learn that for each run and neuron rather than assume it.

A bucket's odds are its posterior mean under a uniform prior, (beats + 1) / (tries + 2): every bucket
keeps a chance, and one that never pays is drawn less and less (probability matching, Thompson's rule
on average).
"""

from __future__ import annotations

from collections.abc import Sequence

# Upper ends (exclusive) of the distance buckets; the last bucket is open.
_BOUNDS = (1, 2, 4, 8, 16, 32)
BUCKETS = len(_BOUNDS) + 1


def bucket(distance: int) -> int:
    """The bucket of a swap `distance` tokens before the peak (0: the peak itself)."""
    if distance < 0:
        raise ValueError(f"a swap after the peak ({distance}) has no bucket")
    return next((i for i, bound in enumerate(_BOUNDS) if distance < bound), len(_BOUNDS))


def new_counts() -> list[list[int]]:
    """Per bucket: [tries, beats]."""
    return [[0, 0] for _ in range(BUCKETS)]


def single_swap(parent: Sequence[int], child: Sequence[int]) -> int | None:
    """The position where `child` differs from `parent` when it is the only one, else None (an edit,
    a stacked swap or the parent itself)."""
    if len(parent) != len(child):
        return None
    changed = [i for i, (a, b) in enumerate(zip(parent, child)) if a != b]
    return changed[0] if len(changed) == 1 else None


def counted(counts: Sequence[Sequence[int]], parent: Sequence[int], peak: int, children: Sequence[tuple[Sequence[int], bool]]) -> list[list[int]]:
    """`counts` with the children of `parent` (whose peak is at index `peak`) added: each child (its ids,
    whether it beat the parent) that is one swap at or before the peak counts once in its bucket."""
    out = [list(c) for c in counts]
    for ids, beat in children:
        at = single_swap(parent, ids)
        if at is None or at > peak:
            continue
        b = bucket(peak - at)
        out[b][0] += 1
        out[b][1] += int(beat)
    return out


def position_weights(counts: Sequence[Sequence[int]], positions: Sequence[int], peak: int) -> list[float]:
    """A weight for each of `positions` (all at or before `peak`): its bucket's odds."""
    odds = [(beats + 1) / (tries + 2) for tries, beats in counts]
    return [odds[bucket(peak - p)] for p in positions]

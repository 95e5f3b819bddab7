"""The gradient search's population: a few prompts held as token ids, one per fluency weight.

Slot i keeps, of everything measured so far, the prompt with the lowest
`-activation + weight_i * cross-entropy` (EPO's rule, "fluent dreaming"). The weights run
log-spaced over --fluency-range, so the low slots chase the activation whatever the text looks
like and the high slots keep it readable; together they trace the Pareto front of activation
against cross-entropy. A slot of weight 0 is the lead: it keeps the highest activation measured,
whatever its cross-entropy, and a prompt whose cross-entropy was not measured (a child of the lead
that did not beat it) can hold no other slot. A slot is elitist (it changes only for a lower
loss), and one prompt may hold several slots. Prompts from the LLM, the seeds and the fallback compete like the gradient's
own children, so a foothold found by any of them is climbed from.
"""

from __future__ import annotations

from collections.abc import Sequence

from neuron_search.state import Member


def slot_loss(member: Member, weight: float) -> float:
    if weight == 0:
        return -member["activation"]
    if member["xent"] is None:
        raise ValueError(f"a slot of weight {weight} needs a cross-entropy: {member['prompt']!r}")
    return -member["activation"] + weight * member["xent"]


def update_population(population: Sequence[Member], candidates: Sequence[Member], weights: Sequence[float]) -> list[Member]:
    """Each slot's best of its current member and the candidates; empty slots take the best there is.
    Slots of a positive weight weigh only candidates whose cross-entropy was measured."""
    new: list[Member] = []
    for slot, weight in enumerate(weights):
        weighed = [c for c in candidates if weight == 0 or c["xent"] is not None]
        contenders = ([population[slot]] if slot < len(population) else []) + weighed
        if contenders:
            new.append(min(contenders, key=lambda m: slot_loss(m, weight)))
    return new

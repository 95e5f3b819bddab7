"""gradient: propose token swaps and edits that the subject model's gradient says should raise the neuron.

For each member of the population, the gradient of the neuron's activation with respect to its
one-hot tokens predicts how much each (position, token) swap would raise it; each child makes
--swaps swaps drawn from the --gradient-top-k best predicted over all positions (GCG's and EPO's
step, with the position chosen by the gradient too), and --edits more children insert a token
from the gradient's top at a position, or delete one, so that a prompt's length can change too.
With --position max, only positions up to the member's peak change: tokens after it cannot move a
causal model's activation there. With --fluency-gradient (the default) slot i ranks the tokens by
the gradient plus its fluency weight times how much the swap lowers the prompt's own next-token
loss at that position (EPO's direct fluency term), so the readable slots propose readable tokens.
With --lead-distance the lead's ranking is lowered by each token's embedding distance to the one it
replaces (Faster-GCG's regularizer): the gradient is a first-order estimate, best near the current token;
with --lead-distance-stall only once the lead has gone that many gradient batches without a rise; with
--lead-distance-share below 1, only that share of the lead's children, the rest drawn from the gradient alone.
The lead (weight 0) proposes in every batch and the readable slots in every --readable-every'th, so
the lead climbs in many small steps, as GCG does. A member's gradient and gains are computed once,
when it joins the population. Children are ordinary candidates: the filter, the measurement and the
records treat them like any other prompt. No LLM is involved. No child holds an added or control token of the
tokenizer (`<start_of_image>`, `<unusedN>`, ...) unless the run allows them (`allow_added_tokens`).
"""

from __future__ import annotations

import torch
from langgraph.runtime import Runtime

from neuron_search.context import SearchContext, fluency_weights
from neuron_search.services.search.candidates import allowed_tokens, member_swaps, propose_children, propose_edits, stacked_swaps
from neuron_search.services.runtime import context_of, services_for
from neuron_search.state import Candidate, Member, SearchState, bump


def gradient(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    subject = services.subject
    population = state["population"]
    stats = state["stats"]
    # Seeded by run settings and progress, so a resumed or repeated run makes the same children.
    rng = torch.Generator().manual_seed(ctx.seed * 1_000_003 + stats["gradient_batches"])
    allow_added = ctx.allow_added_tokens
    allowed = allowed_tokens(subject, ctx.ascii_only, allow_added)
    # One gradient (and one set of fluency gains) per distinct member and slot weight: a prompt may
    # hold several slots, and one that stayed since the last iteration is remembered from then. The
    # lead ranks by the activation alone (weight 0): no fluency gains for it.
    slot_weights = fluency_weights(ctx)
    leads = [w == 0 for w in slot_weights]
    lead_slot = leads.index(True) if True in leads else None
    stall, moves = state.get("lead_stall", 0), 0
    if lead_slot is not None and lead_slot < len(population):
        moved, stall = _moved_lead(state, population, lead_slot, ctx, subject)
        moves, population = int(moved is not population), moved
    # --lead-distance-stall: the penalty only once the lead has stopped climbing.
    distance = ctx.lead_distance if stall >= ctx.lead_distance_stall else 0.0
    # --readable-every: in the other gradient batches only the lead proposes (and is ranked). Without a
    # lead every batch is the readable slots' turn.
    readable_turn = lead_slot is None or stats["gradient_batches"] % ctx.readable_every == 0
    proposing = [(m, w, lead) for m, w, lead in zip(population, slot_weights, leads) if lead or readable_turn]
    ranked = member_swaps(
        subject, [(m["ids"], w if ctx.fluency_gradient else 0.0) for m, w, _ in proposing], ctx.layer, ctx.neuron, ctx.position, allowed,
        ctx.gradient_top_k, distance=distance,
    )  # fmt: skip

    # --lead-distance-share below 1: the rest of a lead's children are drawn from the gradient alone.
    far = ctx.lead_children - round(ctx.lead_distance_share * ctx.lead_children) if distance else 0
    leading = [m for m, _, lead in proposing if lead] if far else []
    far_ranked = iter(
        member_swaps(subject, [(m["ids"], 0.0) for m in leading], ctx.layer, ctx.neuron, ctx.position, allowed, ctx.gradient_top_k)
        if leading
        else []
    )

    def tried(row: list[int]) -> bool:  # measured before: the filter would drop it as a duplicate
        return subject.decode(row) in services.index

    # Prompt -> whether only the lead proposed it. Two members (one prompt in two slots) may propose
    # the same child; one also proposed by a readable slot needs its cross-entropy measured.
    children: dict[str, bool] = {}
    if lead_slot is not None:
        for row in _stacked(state, population[lead_slot], ctx, subject, allowed):
            children[subject.decode(row)] = True
    for (member, _, lead), swaps in zip(proposing, ranked):
        positions = range(member["peak"] + 1) if ctx.position == "max" else range(len(member["ids"]))
        if lead and far:  # (ranking, children drawn from it)
            draws = [(swaps, ctx.lead_children - far), (next(far_ranked), far)]
        else:
            draws = [(swaps, ctx.lead_children if lead else ctx.children)]
        rows = [
            row
            for ranking, count in draws
            if count
            for row in propose_children(
                subject, ranking, rng, count, ctx.gradient_top_k, ctx.swaps, positions, tried, allow_added,
                uniform_positions=lead and ctx.lead_uniform_positions,
            )
        ]  # fmt: skip
        if ctx.edits:
            rows += propose_edits(subject, swaps, rng, ctx.edits, ctx.gradient_top_k, positions, ctx.max_prompt_tokens, allow_added)
        for row in rows:
            prompt = subject.decode(row)
            children[prompt] = children.get(prompt, True) and lead
    return SearchState(
        candidates=[Candidate(prompt=p, source="gradient", lead=lead) for p, lead in children.items()],
        source="gradient",
        attempts=0,
        stats=bump(stats, generated=len(children), gradient_batches=1, lead_moves=moves),
        lead_parent=population[lead_slot] if lead_slot is not None else None,
        lead_stall=stall,
        population=population,
    )


def _moved_lead(state: SearchState, population: list[Member], lead_slot: int, ctx: SearchContext, subject) -> tuple[list[Member], int]:
    """The population and the lead's stall count (which --lead-distance-stall reads) after --lead-patience's
    rule. When none of the lead's children in the latest gradient batch beat it (the lead is still their
    parent), the stall count grows; at --lead-patience (0: never) the lead moves to its best child of that
    batch, even a worse one (GCG's step), and the count starts again. The best ever measured stays in the
    records and the top table."""
    parent = state.get("lead_parent")
    stall = state.get("lead_stall", 0)
    if parent is None:
        return population, stall
    if population[lead_slot]["ids"] != parent["ids"]:
        return population, 0  # it moved since (up, or to a prompt of another source)
    # The lead is still the parent of the latest gradient batch: none of its children beat it. Counted
    # once per gradient batch, whatever ran between (the fallback's batch after a batch without a rise);
    # the children themselves are at hand only when the gradient's batch was the last.
    stall += 1
    if not ctx.lead_patience or stall < ctx.lead_patience:
        return population, stall
    last = zip(state.get("measured", []), state.get("accepted", [])) if state.get("source") == "gradient" else []
    children = [m for m, c in last if c.get("lead") and not m["error"] and m["prompt"] != parent["prompt"]]
    if not children:
        return population, stall
    best = max(children, key=lambda m: m["activation"])
    moved = list(population)
    moved[lead_slot] = Member(
        prompt=best["prompt"], ids=subject.token_ids(best["prompt"], ctx.allow_added_tokens), activation=best["activation"],
        peak=best["peak"], xent=best["xent"],
    )  # fmt: skip
    return moved, 0


def _stacked(state: SearchState, lead: Member, ctx: SearchContext, subject, allowed: torch.Tensor) -> list[list[int]]:
    """--combine children of the lead: when the last batch was the gradient's and children of the lead
    then (its parent) beat it, their swaps stacked onto the lead now, best first (`stacked_swaps`)."""
    parent = state.get("lead_parent")
    if not ctx.combine or parent is None or state.get("source") != "gradient" or parent["ids"] == lead["ids"]:
        return []
    beat = [
        (m["activation"], m["prompt"])
        for m, c in zip(state.get("measured", []), state.get("accepted", []))
        if c.get("lead") and not m["error"] and m["activation"] > parent["activation"]
    ]
    improved = [subject.token_ids(prompt, ctx.allow_added_tokens) for _, prompt in sorted(beat, reverse=True)]
    return stacked_swaps(subject, parent["ids"], lead["ids"], improved, ctx.combine, allowed, ctx.allow_added_tokens)

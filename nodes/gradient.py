"""gradient: propose token swaps and edits that the subject model's gradient says should raise the neuron.

For each member of the population, the gradient of the neuron's activation with respect to its
one-hot tokens predicts how much each (position, token) swap would raise it; each child makes
--swaps swaps drawn from the --gradient-top-k best predicted over all positions (GCG's and EPO's
step, with the position chosen by the gradient too), and --edits more children insert a token
from the gradient's top at a position, or delete one, so that a prompt's length can change too.
With --position max, only positions up to the member's peak change: tokens after it cannot move a
causal model's activation there. With --fluency-gradient (the default) slot i ranks the tokens by
the gradient plus its fluency weight times how much the swap lowers the prompt's own next-token
loss at that position (EPO's direct fluency term), so the readable slots propose readable tokens. A member's gradient and gains are computed once, when it joins the
population. Children are ordinary candidates: the filter, the measurement and the records treat
them like any other prompt. No LLM is involved. No child holds an added or control token of the
tokenizer (`<start_of_image>`, `<unusedN>`, ...) unless the run allows them (`allow_added_tokens`).
"""

from __future__ import annotations

import torch
from langgraph.runtime import Runtime

from context import SearchContext, fluency_weights
from services.model.gradient import allowed_tokens, member_gradients, propose_children, propose_edits
from services.runtime import context_of, services_for
from state import Candidate, SearchState, bump


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
    # One gradient (and one set of fluency gains) per distinct member: a prompt may hold several
    # slots, and one that stayed since the last iteration is remembered from then.
    distinct = list(dict.fromkeys(tuple(m["ids"]) for m in population))
    computed = member_gradients(subject, [list(ids) for ids in distinct], ctx.layer, ctx.neuron, ctx.position, ctx.fluency_gradient)
    by_ids = dict(zip(distinct, computed))

    def tried(row: list[int]) -> bool:  # measured before: the filter would drop it as a duplicate
        return subject.decode(row) in services.index

    children: dict[str, None] = {}  # two members (one prompt in two slots) may propose the same child
    for member, weight in zip(population, fluency_weights(ctx)):
        grad, gain = by_ids[tuple(member["ids"])]
        if gain is not None and weight > 0:
            grad = grad + weight * gain
        ids = member["ids"]
        positions = range(member["peak"] + 1) if ctx.position == "max" else range(len(ids))
        rows = propose_children(
            subject, ids, grad, allowed, rng, ctx.children, ctx.gradient_top_k, ctx.swaps, positions, tried, allow_added
        )
        if ctx.edits:
            rows += propose_edits(
                subject, ids, grad, allowed, rng, ctx.edits, ctx.gradient_top_k, positions, ctx.max_prompt_tokens, allow_added
            )
        children.update((subject.decode(row), None) for row in rows)
    return SearchState(
        candidates=[Candidate(prompt=p, source="gradient") for p in children],
        source="gradient",
        attempts=0,
        stats=bump(stats, generated=len(children), gradient_batches=1),
    )

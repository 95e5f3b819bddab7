"""gradient: propose token swaps that the subject model's gradient says should raise the neuron.

For each member of the population, the gradient of the neuron's activation with respect to its
one-hot tokens ranks, at each position, the tokens that would raise it most; each child swaps
--swaps positions to tokens drawn from those top --gradient-top-k (GCG's and EPO's step). With
--position max, only positions up to the member's peak change: tokens after it cannot move a
causal model's activation there. Children are ordinary candidates: the filter, the measurement and
the records treat them like any other prompt. No LLM is involved.
"""

from __future__ import annotations

import torch
from langgraph.runtime import Runtime

from context import SearchContext
from services.model.gradient import allowed_tokens, propose_children, token_gradients
from services.runtime import context_of, services_for
from state import Candidate, SearchState, bump


def gradient(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    subject = services_for(ctx, state["run_id"]).subject
    population = state["population"]
    stats = state["stats"]
    # Seeded by run settings and progress, so a resumed or repeated run makes the same children.
    rng = torch.Generator().manual_seed(ctx.seed * 1_000_003 + stats["gradient_batches"])
    allowed = allowed_tokens(subject, ctx.ascii_only)
    _, grads = token_gradients(subject, [m["ids"] for m in population], ctx.layer, ctx.neuron, ctx.position)
    prompts: list[str] = []
    for member, grad in zip(population, grads):
        positions = range(member["peak"] + 1) if ctx.position == "max" else None
        for ids in propose_children(subject, member["ids"], grad, allowed, rng, ctx.children, ctx.gradient_top_k, ctx.swaps, positions):
            prompt = subject.decode(ids)
            if prompt not in prompts:  # two members (one prompt in two slots) may propose the same child
                prompts.append(prompt)
    return SearchState(
        candidates=[Candidate(prompt=p, source="gradient") for p in prompts],
        source="gradient",
        attempts=0,
        stats=bump(stats, generated=len(prompts), gradient_batches=1),
    )

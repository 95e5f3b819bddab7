"""semantic_filter: drop exact duplicates and near-copies of mediocre prompts before measuring."""

from __future__ import annotations

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext
from neuron_search.services.runtime import context_of, services_for
from neuron_search.state import Candidate, SearchState, bump

# How many recent near-copies the LLM is shown, so it learns what to avoid.
REJECTED_SHOWN = 10


def semantic_filter(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    # Cut to the token cap first, so the filter judges exactly what will be measured.
    cut = [
        Candidate(c, prompt=services.subject.truncate(c["prompt"], ctx.max_prompt_tokens, ctx.allow_added_tokens))
        for c in state["candidates"]
    ]
    kept = [c for c in cut if c["prompt"].strip()]
    verdicts = services.index.check(
        [c["prompt"] for c in kept],
        threshold=ctx.similarity_threshold,
        filter_buckets=frozenset(b.strip() for b in ctx.filter_buckets.split(",") if b.strip()),
        low_percentile=ctx.low_percentile,
        high_percentile=ctx.high_percentile,
    )
    accepted = [c for c, v in zip(kept, verdicts) if v.status == "accepted"]
    similar = [c["prompt"] for c, v in zip(kept, verdicts) if v.status == "similar"]
    whole_batch_rejected = state["source"] == "llm" and not accepted
    return SearchState(
        accepted=accepted,
        rejected_similar=(state["rejected_similar"] + similar)[-REJECTED_SHOWN:],
        attempts=state["attempts"] + 1 if whole_batch_rejected else 0,
        stats=bump(
            state["stats"],
            accepted=len(accepted),
            rejected_similar=len(similar),
            rejected_duplicate=sum(v.status == "duplicate" for v in verdicts),
            rejected_empty=len(cut) - len(kept),
        ),
    )

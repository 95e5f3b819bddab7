"""random_fallback: inject prompts that owe nothing to the LLM's context, to escape a stall.

Its tokens are drawn from the subject model's text-only vocabulary: no added or control token's
name (`<start_of_image>`, `<unusedN>`, ...) unless the run allows them (`allow_added_tokens`).
"""

from __future__ import annotations

import random

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext
from neuron_search.services.search.random_prompts import random_prompts
from neuron_search.services.runtime import context_of, services_for
from neuron_search.state import Candidate, SearchState, bump


def random_fallback(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    stats = state["stats"]
    # Seeded by run settings and progress, so a resumed or repeated run makes the same prompts.
    rng = random.Random(f"{ctx.seed}:{state['iteration']}:{stats['fallback_batches']}")
    vocabulary = services.subject.vocabulary_for(ctx.allow_added_tokens)
    prompts = random_prompts(rng, ctx.batch_size, vocabulary, [r["prompt"] for r in state["top"]])
    return SearchState(
        candidates=[Candidate(prompt=p, source="fallback") for p in prompts],
        source="fallback",
        attempts=0,
        stats=bump(stats, generated=len(prompts), fallback_batches=1),
    )

"""generate: ask the LLM for a batch of new prompts, showing it what worked and what did not."""

from __future__ import annotations

from langgraph.runtime import Runtime

from context import SearchContext
from services.prompt_parsing import parse_prompts
from services.proposer import build_request
from services.runtime import context_of, services_for
from state import SearchState, bump


def generate(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    request = build_request(ctx, state["top"], state["bottom"], state["rejected_similar"])
    stats = state["stats"]
    answer = services.proposer.propose(request, seed=ctx.seed + stats["llm_calls"])
    prompts = parse_prompts(answer or "", limit=ctx.batch_size)
    stats = bump(
        stats,
        llm_calls=1,
        llm_errors=int(answer is None),
        llm_empty=int(answer is not None and not prompts),
        generated=len(prompts),
        regenerations=int(state["attempts"] > 0),
    )
    return SearchState(candidates=prompts, source="llm", stats=stats)

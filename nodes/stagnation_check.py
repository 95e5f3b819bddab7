"""stagnation_check: decide whether the search goes on, is stalled, or is done."""

from __future__ import annotations

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext
from neuron_search.services.runtime import context_of
from neuron_search.state import SearchState


def prompts_left(state: SearchState, ctx: SearchContext) -> int | None:
    """How many more prompts the run may measure under --max-prompts (None: no limit). A batch is
    cut to this many before it is measured, so the budget is never overshot."""
    if not ctx.max_prompts:
        return None
    return max(ctx.max_prompts - state["stats"]["measured"], 0)


def stop_reason(state: SearchState, ctx: SearchContext) -> str:
    """Why the run must stop now, or "" if it may go on."""
    best = state["best"]
    if ctx.target is not None and best is not None and best["activation"] >= ctx.target:
        return f"reached the target activation {ctx.target:g}"
    if state["iteration"] >= ctx.iterations:
        return f"ran {ctx.iterations} iterations"
    if ctx.max_prompts and state["stats"]["measured"] >= ctx.max_prompts:
        return f"measured {ctx.max_prompts} prompts"
    calls = state["stats"]["llm_calls"] + state["stats"]["explain_llm_calls"]
    if ctx.max_llm_calls and calls >= ctx.max_llm_calls:
        return f"made {ctx.max_llm_calls} LLM calls"
    if ctx.time_limit and state["elapsed"] >= ctx.time_limit:
        return f"reached the time limit of {ctx.time_limit:g} s"
    return ""


def stagnation_check(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    reason = stop_reason(state, ctx)
    if reason:
        return SearchState(route="done", stop_reason=reason)
    if state["since_improvement"] >= ctx.patience:
        # The fallback gets one batch; the LLM then has a fresh window of patience.
        return SearchState(route="stalled", since_improvement=0)
    return SearchState(route="continue")

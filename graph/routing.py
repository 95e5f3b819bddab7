"""Where the search goes after a node: small named functions, so Studio draws the algorithm."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END
from langgraph.runtime import Runtime

from neuron_search.context import SearchContext
from neuron_search.services.runtime import context_of
from neuron_search.state import SearchState


def after_filter(
    state: SearchState, runtime: Runtime[SearchContext]
) -> Literal["measure_activation", "generate", "random_fallback"]:
    """Measure what survived; if the LLM's whole batch was rejected, ask it again a few times; if
    the gradient had nothing new to offer, fall back to fresh prompts (else a run could go round
    measuring nothing, never counted as stalled)."""
    if state["accepted"] or state["source"] in ("seed", "fallback"):
        return "measure_activation"
    if state["source"] == "gradient":
        return "random_fallback"
    if state["attempts"] <= context_of(runtime).max_attempts:
        return "generate"
    return "random_fallback"


def after_check(
    state: SearchState, runtime: Runtime[SearchContext]
) -> Literal["generate", "gradient", "random_fallback", "hypothesize", "explain", "__end__"]:
    """done → the explanation (or END with --no-explain), stalled → random_fallback; going on, the
    --strategy picks the proposer: the LLM, the gradient (once the population holds a prompt), or
    the two in turn; every --explain-every iterations the LLM's turn starts with a new hypothesis."""
    ctx = context_of(runtime)
    if state["route"] == "done":
        return "explain" if ctx.explain else END
    if state["route"] == "stalled":
        return "random_fallback"
    gradient_turn = ctx.strategy == "gradient" or (ctx.strategy == "mixed" and state["iteration"] % 2 == 1)
    if gradient_turn and state.get("population"):
        return "gradient"
    if ctx.strategy == "gradient":  # nothing measured yet to climb from
        return "random_fallback"
    if ctx.explain_every and state["iteration"] >= ctx.explain_every and state["iteration"] % ctx.explain_every == 0:
        return "hypothesize"
    return "generate"

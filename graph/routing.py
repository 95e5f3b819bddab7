"""Where the search goes after a node: small named functions, so Studio draws the algorithm."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END
from langgraph.runtime import Runtime

from context import SearchContext
from services.runtime import context_of
from state import SearchState


def after_filter(
    state: SearchState, runtime: Runtime[SearchContext]
) -> Literal["measure_activation", "generate", "random_fallback"]:
    """Measure what survived; if the LLM's whole batch was rejected, ask it again a few times."""
    if state["accepted"] or state["source"] != "llm":
        return "measure_activation"
    if state["attempts"] <= context_of(runtime).max_attempts:
        return "generate"
    return "random_fallback"


def after_check(state: SearchState) -> Literal["generate", "random_fallback", "__end__"]:
    """continue → generate, stalled → random_fallback, done → END."""
    return {"continue": "generate", "stalled": "random_fallback", "done": END}[state["route"]]

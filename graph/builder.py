"""The search graph. This module only wires nodes; what each does lives in nodes/."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from neuron_search.context import SearchContext
from neuron_search.graph.routing import after_check, after_filter
from neuron_search.nodes import (
    explain,
    generate,
    gradient,
    hypothesize,
    measure_activation,
    random_fallback,
    seed,
    semantic_filter,
    stagnation_check,
    update_records,
)
from neuron_search.state import SearchState


def build_graph() -> StateGraph:
    """The uncompiled graph: Studio compiles it bare, run.py with a SQLite checkpointer."""
    builder = StateGraph(SearchState, context_schema=SearchContext)
    builder.add_node("seed", seed)
    builder.add_node("generate", generate)
    builder.add_node("gradient", gradient)
    builder.add_node("semantic_filter", semantic_filter)
    builder.add_node("measure_activation", measure_activation)
    builder.add_node("update_records", update_records)
    builder.add_node("stagnation_check", stagnation_check)
    builder.add_node("random_fallback", random_fallback)
    builder.add_node("hypothesize", hypothesize)
    builder.add_node("explain", explain)

    builder.add_edge(START, "seed")
    builder.add_edge("seed", "semantic_filter")
    builder.add_edge("generate", "semantic_filter")
    builder.add_edge("gradient", "semantic_filter")
    builder.add_edge("random_fallback", "semantic_filter")
    builder.add_conditional_edges("semantic_filter", after_filter)
    builder.add_edge("measure_activation", "update_records")
    builder.add_edge("update_records", "stagnation_check")
    builder.add_conditional_edges("stagnation_check", after_check)
    builder.add_edge("hypothesize", "generate")
    builder.add_edge("explain", END)
    return builder


# Super-steps one iteration can take at most: regenerations, the fallback, the five-node loop,
# a hypothesis, and at the end the explanation.
def steps_per_iteration(max_attempts: int) -> int:
    return (max_attempts + 2) * 2 + 7

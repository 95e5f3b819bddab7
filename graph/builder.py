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


# The graph's nodes, by the name each has in the graph (its function's name): the one list of them.
NODES = {
    node.__name__: node
    for node in (
        seed, generate, gradient, semantic_filter, measure_activation, update_records, stagnation_check, random_fallback,
        hypothesize, explain,
    )
}  # fmt: skip
NODE_NAMES: tuple[str, ...] = tuple(NODES)


def build_graph() -> StateGraph:
    """The uncompiled graph: Studio compiles it bare, run.py with a SQLite checkpointer."""
    builder = StateGraph(SearchState, context_schema=SearchContext)
    for name, node in NODES.items():
        builder.add_node(name, node)

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

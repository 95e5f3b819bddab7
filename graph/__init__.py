"""The search graph: `build_graph()` wires the nodes; graph/studio.py serves it to LangGraph Studio."""

from neuron_search.graph.builder import build_graph, steps_per_iteration

__all__ = ["build_graph", "steps_per_iteration"]

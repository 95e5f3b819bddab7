"""The search graph: `build_graph()` wires the nodes; `graph` is its Studio export."""

from graph.builder import build_graph, steps_per_iteration

__all__ = ["build_graph", "steps_per_iteration"]

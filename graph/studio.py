"""The graph LangGraph Studio serves (see langgraph.json). Importing it loads no model.

Studio's server brings its own persistence, so this copy is compiled without a checkpointer.
"""

from graph.builder import build_graph

graph = build_graph().compile(name="neuron-search")

"""The search's nodes: plain functions `(state, runtime) -> partial state update`, one per module."""

from neuron_search.nodes.explain import explain
from neuron_search.nodes.generate import generate
from neuron_search.nodes.gradient import gradient
from neuron_search.nodes.hypothesize import hypothesize
from neuron_search.nodes.measure_activation import measure_activation
from neuron_search.nodes.random_fallback import random_fallback
from neuron_search.nodes.seed import seed
from neuron_search.nodes.semantic_filter import semantic_filter
from neuron_search.nodes.stagnation_check import stagnation_check
from neuron_search.nodes.update_records import update_records

__all__ = [
    "explain",
    "generate",
    "gradient",
    "hypothesize",
    "measure_activation",
    "random_fallback",
    "seed",
    "semantic_filter",
    "stagnation_check",
    "update_records",
]

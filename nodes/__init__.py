"""The search's nodes: plain functions `(state, runtime) -> partial state update`, one per module."""

from nodes.explain import explain
from nodes.generate import generate
from nodes.gradient import gradient
from nodes.hypothesize import hypothesize
from nodes.measure_activation import measure_activation
from nodes.random_fallback import random_fallback
from nodes.seed import seed
from nodes.semantic_filter import semantic_filter
from nodes.stagnation_check import stagnation_check
from nodes.update_records import update_records

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

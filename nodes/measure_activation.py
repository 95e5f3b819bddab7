"""measure_activation: run the accepted prompts through the subject model in padded batches."""

from __future__ import annotations

from langgraph.runtime import Runtime

from context import SearchContext
from services.runtime import context_of, services_for
from state import SearchState


def measure_activation(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    measured = services.subject.measure(
        [c["prompt"] for c in state["accepted"]], ctx.layer, ctx.neuron, ctx.position, batch_size=ctx.batch_size
    )
    return SearchState(measured=measured)

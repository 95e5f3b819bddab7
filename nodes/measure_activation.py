"""measure_activation: run the accepted prompts through the subject model in padded batches.

With the gradient in the search (--strategy gradient or mixed) each prompt's cross-entropy is
measured too, in the same forward pass run on to the logits: the population's slots weigh it, and
the report draws activation against it. In a sweep (--sweep-table), the same passes read every
neuron of the sweep, and each prompt enters the shared table of those whose top prompts it ranks among.
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from context import SearchContext
from services.errors import UserError
from services.runtime import context_of, services_for, shared_tops
from state import SearchState


def measure_activation(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    prompts = [c["prompt"] for c in state["accepted"]]
    table = shared_tops(ctx.sweep_table) if ctx.sweep_table else None
    measured, shared = services.subject.measure_shared(
        prompts,
        ctx.layer,
        ctx.neuron,
        table.neurons if table else (),
        ctx.position,
        batch_size=ctx.batch_size,
        fluency=ctx.strategy != "llm",
    )
    errors = {m["error"] for m in measured}
    # One bad prompt is recorded and the search goes on; the same error for every prompt of a batch
    # is the model or the machine failing, and would fail every batch after it too.
    if len(measured) > 1 and len(errors) == 1 and "" not in errors:
        raise UserError(
            f"Every prompt of iteration {state['iteration']} ({len(measured)} prompts) failed to measure "
            f"with the same error: {errors.pop()}. The subject model {ctx.model} cannot measure layer "
            f"{ctx.layer} neuron {ctx.neuron} here; nothing of this batch was stored. Fix the cause (the "
            "model, --device, free memory) and continue with --resume."
        )
    if table:
        table.record(prompts, shared, found_for=ctx.neuron)
    return SearchState(measured=measured)

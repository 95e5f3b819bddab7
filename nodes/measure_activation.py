"""measure_activation: run the accepted prompts through the subject model in padded batches.

With the gradient in the search (--strategy gradient or mixed) each prompt's cross-entropy is
measured too, in the same forward pass run on to the logits: the population's slots weigh it, and
the report draws activation against it. In a sweep (--sweep-table), the same passes read every
neuron of the sweep, and each prompt enters the shared table of those whose top prompts it ranks among.

With --max-prompts, a batch larger than what is left of the budget is cut to it (its first
prompts are measured), so a run measures exactly that many prompts.
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from context import SearchContext
from nodes.stagnation_check import prompts_left
from services.errors import UserError
from services.runtime import context_of, services_for, shared_tops
from state import SearchState


def measure_activation(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    accepted = state["accepted"]
    left = prompts_left(state, ctx)
    if left is not None and len(accepted) > left:
        accepted = accepted[:left]  # the last batch is trimmed: the budget is never overshot
    prompts = [c["prompt"] for c in accepted]
    table = shared_tops(ctx.sweep_table) if ctx.sweep_table else None
    measured, shared = services.subject.measure_shared(
        prompts,
        ctx.layer,
        ctx.neuron,
        table.neurons if table else (),
        ctx.position,
        batch_size=ctx.batch_size,
        fluency=ctx.strategy != "llm",
        allow_added_tokens=ctx.allow_added_tokens,
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
    if len(accepted) < len(state["accepted"]):  # update_records reads one source per measured prompt
        return SearchState(measured=measured, accepted=accepted)
    return SearchState(measured=measured)

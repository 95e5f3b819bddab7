"""measure_activation: run the accepted prompts through the subject model in padded batches.

With the gradient in the search (--strategy gradient or mixed) each prompt's cross-entropy is
measured too, in the same forward pass run on to the logits: the population's slots weigh it, and
the report draws activation against it. A child of the lead (the slot of fluency weight 0) is
measured to the neuron's layer only, which costs a fraction of the pass through Gemma's 262k-token
head; its cross-entropy is measured in a second pass only when it beats the lead, the one case in
which the population takes it (the lead) and the front or the readable point could need it. In a sweep (--sweep-table), the same passes read every
neuron of the sweep, and each prompt enters the shared table of those whose top prompts it ranks among.

With --max-prompts, a batch larger than what is left of the budget is cut to it (its first
prompts are measured), so a run measures exactly that many prompts.
"""

from __future__ import annotations

from langgraph.runtime import Runtime

import numpy as np

from neuron_search.context import SearchContext, fluency_weights
from neuron_search.nodes.stagnation_check import prompts_left
from neuron_search.services.errors import UserError
from neuron_search.services.runtime import context_of, services_for, shared_tops
from neuron_search.state import SearchState


def measure_activation(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    accepted = state["accepted"]
    left = prompts_left(state, ctx)
    if left is not None and len(accepted) > left:
        accepted = accepted[:left]  # the last batch is trimmed: the budget is never overshot
    prompts = [c["prompt"] for c in accepted]
    table = shared_tops(ctx.sweep_table) if ctx.sweep_table else None
    fluency = ctx.strategy != "llm"
    weights = fluency_weights(ctx) if fluency else []
    lead = max((m["activation"] for m, w in zip(state.get("population", []), weights) if w == 0), default=None)
    cheap = [lead is not None and c.get("lead", False) for c in accepted]
    measured: list = [None] * len(prompts)
    shared = np.full((len(prompts), len(table.neurons) if table else 0), np.nan, dtype=np.float32)
    for with_xent in (True, False):
        at = [i for i, c in enumerate(cheap) if c != with_xent]
        if not at:
            continue
        part, part_shared = services.subject.measure_shared(
            [prompts[i] for i in at],
            ctx.layer,
            ctx.neuron,
            table.neurons if table else (),
            ctx.position,
            batch_size=ctx.batch_size,
            fluency=fluency and with_xent,
            allow_added_tokens=ctx.allow_added_tokens,
        )
        for i, m, row in zip(at, part, part_shared):
            measured[i], shared[i] = m, row
    beat = [m for m, c in zip(measured, cheap) if c and not m["error"] and m["activation"] > lead]
    if beat:
        rows = [services.subject.token_ids(m["prompt"], ctx.allow_added_tokens) for m in beat]
        for m, xent in zip(beat, services.subject.cross_entropy(rows, batch_size=ctx.batch_size)):
            m["xent"] = xent
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

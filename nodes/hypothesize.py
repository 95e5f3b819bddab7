"""hypothesize: every --explain-every iterations, explain the records so far, score that by
generation (prompts written from it, measured), and hand it to the LLM's next requests, so the
search tests and refines a hypothesis instead of only climbing."""

from __future__ import annotations

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext
from neuron_search.services.explain.run_explanation import hypothesis, llm_calls_of, measurer
from neuron_search.services.runtime import context_of, services_for
from neuron_search.services.storage.run_folder import run_dir
from neuron_search.state import SearchState, bump


def hypothesize(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    measure = measurer(services.subject, ctx.layer, ctx.neuron, ctx.position, ctx.batch_size)
    entry = hypothesis(run_dir(ctx, state["run_id"]), services.proposer.spec, measure, state["iteration"], seed=ctx.seed)
    generation = entry["generation"] or {}
    summary = entry["explanation"]
    if summary and generation.get("auroc") is not None:
        summary += f" (prompts written from it: AUROC {generation['auroc']:.2f} against prompts written not to fire)"
    return SearchState(hypothesis=summary, stats=bump(state["stats"], explain_llm_calls=llm_calls_of(entry)))

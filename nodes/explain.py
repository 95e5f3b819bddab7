"""explain: end a search with one sentence on what the neuron detects, scored beside a control on
prompts the explainer never saw (services/explain/run_explanation.py), and on the neuron's top and
ordinary real-text snippets when the layer's scan of the corpus is cached (a gradient run's seeds made it)."""

from __future__ import annotations

import logging

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext
from neuron_search.services.dataset.corpus import run_corpus
from neuron_search.services.dataset.exemplars import real_text_holdout
from neuron_search.services.explain.run_explanation import REAL_TEXT_POOL, explain_run, llm_calls_of, measurer
from neuron_search.services.runtime import context_of, services_for
from neuron_search.services.storage.run_folder import run_dir
from neuron_search.state import SearchState, bump

log = logging.getLogger("neuron_search")


def explain(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    measure = measurer(services.subject, ctx.layer, ctx.neuron, ctx.position, ctx.batch_size)
    corpus = run_corpus(ctx.corpus, ctx.text_column)  # the search's own corpus, where it named one
    real_text = real_text_holdout(services.subject, ctx.layer, ctx.neuron, n=REAL_TEXT_POOL, seed=ctx.seed, source=corpus)
    final = explain_run(run_dir(ctx, state["run_id"]), services.proposer.spec, measure, seed=ctx.seed, real_text=real_text)
    if not final["explanation"]:
        log.warning("The LLM %s gave no usable explanation of this neuron.", services.proposer.spec)
    return SearchState(
        explanation=final["explanation"], stats=bump(state["stats"], explain_llm_calls=llm_calls_of(final))
    )

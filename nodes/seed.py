"""seed: start a run, validate it against the subject model, and queue the seed prompts (the
built-in ones, the user's, and with --seed-corpus the neuron's top snippets of real text, which are
saved where the run's report finds the dataset max)."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from context import SearchContext, seeds_from_corpus
from services.storage.run_folder import run_id_for
from services.dataset.exemplars import exemplars, write_exemplars
from services.runtime import context_of, services_for
from services.search.seeds import BUILTIN_SEEDS
from state import Candidate, SearchState, bump, empty_stats


def seed(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    execution = getattr(runtime, "execution_info", None)
    run_id = run_id_for(ctx, execution.thread_id if execution else None)
    subject = services_for(ctx, run_id).subject  # loads and validates the subject model before any other work
    prompts = (list(BUILTIN_SEEDS) if ctx.builtin_seeds else []) + list(ctx.seed_prompts)
    if seeds_from_corpus(ctx):  # a search that starts from what real text already does to the neuron
        real = exemplars(subject, ctx.layer, ctx.neuron, top_k=ctx.top_k)
        write_exemplars(real, ctx.results_dir)
        prompts += [r["prompt"] for r in real.records]
    candidates = [Candidate(prompt=p, source="seed") for p in prompts]
    return SearchState(
        run_id=run_id,
        iteration=0,
        source="seed",
        candidates=candidates,
        accepted=[],
        measured=[],
        rejected_similar=[],
        top=[],
        bottom=[],
        population=[],
        best=None,
        hypothesis="",
        explanation="",
        stats=bump(empty_stats(), generated=len(candidates)),
        attempts=0,
        since_improvement=0,
        batch_started=time.time(),
        elapsed=0.0,
        route="continue",
        stop_reason="",
    )

"""seed: start a run, validate it against the subject model, and queue the seed prompts (the
built-in ones, the user's, and with --seed-corpus the neuron's top snippets of real text, which are
saved where the run's report finds the dataset max)."""

from __future__ import annotations

import logging
import time

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext, fluency_weights, seeds_from_corpus
from neuron_search.services.dataset.corpus import run_corpus
from neuron_search.services.dataset.exemplars import exemplars
from neuron_search.services.reports.exemplars_page import write_exemplars
from neuron_search.services.runtime import Services, context_of, services_for
from neuron_search.services.search.findings import ranked_findings
from neuron_search.services.search.seeds import BUILTIN_SEEDS
from neuron_search.services.storage.run_folder import run_id_for
from neuron_search.state import Candidate, Member, Record, SearchState, Stats, bump, empty_stats

log = logging.getLogger(__name__)


def seed(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    execution = getattr(runtime, "execution_info", None)
    run_id = run_id_for(ctx, execution.thread_id if execution else None)
    services = services_for(ctx, run_id)  # loads and validates the subject model before any other work
    last = services.store.last_iteration()
    if last is not None:  # a run folder with measurements but no checkpoint (Studio, a lost checkpoints file)
        return _continued(run_id, last, services, ctx)
    subject = services.subject
    prompts = (list(BUILTIN_SEEDS) if ctx.builtin_seeds else []) + list(ctx.seed_prompts)
    if seeds_from_corpus(ctx):  # a search that starts from what real text already does to the neuron
        real = exemplars(subject, ctx.layer, ctx.neuron, run_corpus(ctx.corpus, ctx.text_column), top_k=ctx.top_k)
        write_exemplars(real, ctx.results_dir)
        prompts += [r["prompt"] for r in real.records]
    candidates = [Candidate(prompt=p, source="seed") for p in prompts]
    return _starting(run_id, 0, candidates, [], [], [], bump(empty_stats(), generated=len(candidates)))


def _continued(run_id: str, last: int, services: Services, ctx: SearchContext) -> SearchState:
    """The state of a run whose records are stored but whose graph was not checkpointed: it goes on
    after the store's last iteration (so no new row can take a stored row's key), with its top and
    bottom tables, counters and gradient population rebuilt from the store, and no seed measured again."""
    store = services.store
    top = ranked_findings(store, ctx.top_k)
    population = []
    if ctx.strategy != "llm":
        for weight in fluency_weights(ctx):
            row = store.best_for_weight(weight)
            if row is not None:
                ids = services.subject.token_ids(row["prompt"], ctx.allow_added_tokens)
                population.append(Member(prompt=row["prompt"], ids=ids, activation=row["activation"], peak=row["peak"], xent=row["xent"]))
    log.warning(
        "Run %s has %d stored prompts but no checkpoint of its search: it continues after iteration %d, from the stored records.",
        run_id, len(store), last,
    )  # fmt: skip
    bottom = ranked_findings(store, ctx.top_k, highest=False)
    return _starting(run_id, last + 1, [], top, bottom, population, bump(empty_stats(), **store.stats()))


def _starting(
    run_id: str, iteration: int, candidates: list[Candidate], top: list[Record], bottom: list[Record],
    population: list[Member], stats: Stats,
) -> SearchState:  # fmt: skip
    """A run's first state in this graph: the seed batch to measure, and what is known so far."""
    return SearchState(
        run_id=run_id,
        iteration=iteration,
        source="seed",
        candidates=candidates,
        accepted=[],
        measured=[],
        rejected_similar=[],
        top=top,
        bottom=bottom,
        population=population,
        best=top[0] if top else None,
        hypothesis="",
        explanation="",
        stats=stats,
        attempts=0,
        since_improvement=0,
        batch_started=time.time(),
        elapsed=0.0,
        route="continue",
        stop_reason="",
    )

"""update_records: store the measured batch, grow the semantic index, keep the top/bottom k and,
with the gradient in the search, the population."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext, fluency_weights
from neuron_search.services.search.findings import distinct_findings, ranked_findings
from neuron_search.services.storage.record_store import RecordStore
from neuron_search.services.runtime import context_of, services_for
from neuron_search.services.search.population import update_population
from neuron_search.state import Member, Record, SearchState, bump


def update_records(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    batch = state["measured"]
    sources = [c["source"] for c in state["accepted"]]  # measured holds one result per accepted prompt
    ok = [m for m in batch if not m["error"]]
    stats = bump(state["stats"], measured=len(ok), failed=len(batch) - len(ok))
    services.store.append(state["iteration"], sources, batch, stats)
    services.index.add([m["prompt"] for m in ok], [m["activation"] for m in ok])

    new = [
        Record(
            prompt=m["prompt"],
            activation=m["activation"],
            token=m["tokens"][m["peak"]] if m["tokens"] else "",
            source=source,
            iteration=state["iteration"],
            finding="".join(m["tokens"][: m["peak"] + 1]),
        )
        for source, m in zip(sources, batch)
        if not m["error"]
    ]
    ranked = _kept(state["top"], new, ctx.top_k, services.store, highest=True)
    lowest = _kept(state["bottom"], new, ctx.top_k, services.store, highest=False)
    best = ranked[0] if ranked else None

    old_best = state["best"]
    improved = best is not None and (
        old_best is None or best["activation"] >= old_best["activation"] + ctx.min_improvement
    )
    population = state.get("population", [])
    if ctx.strategy != "llm":
        candidates = [
            Member(prompt=m["prompt"], ids=services.subject.token_ids(m["prompt"], ctx.allow_added_tokens), activation=m["activation"], peak=m["peak"], xent=m["xent"])
            for m in ok
        ]
        population = update_population(population, candidates, fluency_weights(ctx))
    now = time.time()
    started = max(state["batch_started"], services.opened_at)  # the time a run lay stopped is not search time
    return SearchState(
        top=ranked,
        bottom=lowest,
        population=population,
        best=best,
        since_improvement=0 if improved else state["since_improvement"] + len(ok),
        iteration=state["iteration"] + 1,
        elapsed=state["elapsed"] + (now - started),
        batch_started=now,
        stats=stats,
    )


def _kept(kept: list[Record], new: list[Record], k: int, store: RecordStore, highest: bool) -> list[Record]:
    """The k highest (or lowest) distinct findings. A table shorter than k is read from the store,
    which holds every measured prompt: early in a run that costs nothing, and a run resumed with a
    larger --top-k gets back the records its smaller table had dropped."""
    if len(kept) < k:
        return ranked_findings(store, k, highest=highest)
    return distinct_findings(sorted(kept + new, key=lambda r: r["activation"], reverse=highest))[:k]

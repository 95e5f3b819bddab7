"""update_records: store the measured batch, grow the semantic index, and keep the top/bottom k."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from context import SearchContext
from services.runtime import context_of, services_for
from state import Record, SearchState, bump


def update_records(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    batch = state["measured"]
    sources = [c["source"] for c in state["accepted"]]  # measured holds one result per accepted prompt
    services.store.append(state["iteration"], sources, batch)
    ok = [m for m in batch if not m["error"]]
    services.index.add([m["prompt"] for m in ok], [m["activation"] for m in ok])

    new = [
        Record(
            prompt=m["prompt"],
            activation=m["activation"],
            token=m["tokens"][m["peak"]] if m["tokens"] else "",
            source=source,
            iteration=state["iteration"],
        )
        for source, m in zip(sources, batch)
        if not m["error"]
    ]
    ranked = sorted(state["top"] + new, key=lambda r: r["activation"], reverse=True)
    lowest = sorted(state["bottom"] + new, key=lambda r: r["activation"])
    best = ranked[0] if ranked else None

    old_best = state["best"]
    improved = best is not None and (
        old_best is None or best["activation"] >= old_best["activation"] + ctx.min_improvement
    )
    now = time.time()
    started = max(state["batch_started"], services.opened_at)  # the time a run lay stopped is not search time
    return SearchState(
        top=ranked[: ctx.top_k],
        bottom=lowest[: ctx.top_k],
        best=best,
        since_improvement=0 if improved else state["since_improvement"] + len(ok),
        iteration=state["iteration"] + 1,
        elapsed=state["elapsed"] + (now - started),
        batch_started=now,
        stats=bump(state["stats"], measured=len(ok), failed=len(batch) - len(ok)),
    )

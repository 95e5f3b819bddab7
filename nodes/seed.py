"""seed: start a run, validate it against the subject model, and queue the seed prompts."""

from __future__ import annotations

import time
import uuid

from langgraph.runtime import Runtime

from context import SearchContext
from services.runtime import context_of, services_for
from services.seeds import BUILTIN_SEEDS
from state import Candidate, SearchState, bump, empty_stats


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def seed(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    run_id = state.get("run_id") or ctx.run_id or new_run_id()
    services_for(ctx, run_id)  # loads and validates the subject model before any other work
    prompts = (list(BUILTIN_SEEDS) if ctx.builtin_seeds else []) + list(ctx.seed_prompts)
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
        best=None,
        stats=bump(empty_stats(), generated=len(candidates)),
        attempts=0,
        since_improvement=0,
        batch_started=time.time(),
        elapsed=0.0,
        route="continue",
        stop_reason="",
    )

"""generate: ask the LLM for a batch of new prompts, showing it what worked and what did not.

The answer is asked for as JSON of exactly --batch-size prompts through the LLM's own schema support
(llama.cpp's grammar, Ollama's format); a model without it answers the request's free text, which
the parser reads too. A small LLM still often writes fewer usable prompts than asked for; mutations
of the top prompts fill the rest of the batch (context.fill), so every LLM call buys a full batch
of measurements.
"""

from __future__ import annotations

import random

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext
from neuron_search.services.llm.prompt_parsing import parse_prompts
from neuron_search.services.llm.proposer import build_request, prompts_schema
from neuron_search.services.search.random_prompts import mutations
from neuron_search.services.runtime import context_of, services_for
from neuron_search.state import Candidate, SearchState, bump

# A prompt the LLM writes is a phrase or a few sentences; the bound lets a schema-constrained answer close.
SCHEMA_MAX_CHARS = 240


def generate(state: SearchState, runtime: Runtime[SearchContext]) -> SearchState:
    ctx = context_of(runtime)
    services = services_for(ctx, state["run_id"])
    request = build_request(ctx, state["top"], state["bottom"], state["rejected_similar"], state.get("hypothesis", ""))
    stats = state["stats"]
    schema = prompts_schema(ctx.batch_size, SCHEMA_MAX_CHARS)
    answer = services.proposer.propose(request, seed=ctx.seed + stats["llm_calls"], schema=schema)
    prompts = parse_prompts(answer or "", limit=ctx.batch_size)
    filler: list[str] = []
    if ctx.fill == "mutations" and len(prompts) < ctx.batch_size:
        # Seeded by run settings and progress, so a resumed or repeated run makes the same prompts.
        rng = random.Random(f"{ctx.seed}:fill:{stats['llm_calls']}")
        tops = [r["prompt"] for r in state["top"]]
        filler = mutations(rng, ctx.batch_size - len(prompts), services.subject.vocabulary_for(ctx.allow_added_tokens), tops)
    stats = bump(
        stats,
        llm_calls=1,
        llm_errors=int(answer is None),
        llm_empty=int(answer is not None and not prompts),
        generated=len(prompts) + len(filler),
        mutations=len(filler),
        regenerations=int(state["attempts"] > 0),
    )
    candidates = [Candidate(prompt=p, source="llm") for p in prompts]
    candidates += [Candidate(prompt=p, source="mutation") for p in filler]
    return SearchState(candidates=candidates, source="llm", stats=stats)

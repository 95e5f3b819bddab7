"""Each node called directly, on the tiny GPT-2 with a scripted proposer."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.runtime import Runtime

from neuron_search.testing.helpers import scripted, tiny_context
from neuron_search.nodes import generate, measure_activation, random_fallback, seed, semantic_filter, stagnation_check, update_records
from neuron_search.services.llm.proposer import register_chat_model
from neuron_search.services.runtime import release_run, services_for
from neuron_search.state import Candidate, Record, SearchState


@pytest.fixture
def ctx(tiny_model_dir, tmp_path):
    context = tiny_context(tiny_model_dir, tmp_path, scripted(["alpha one\nbeta two\ngamma three"]), top_k=3)
    yield context
    release_run(context, context.run_id)


def step(node, state: SearchState, ctx) -> SearchState:
    """Apply a node's partial update the way the graph does (last write wins)."""
    return {**state, **node(state, Runtime(context=ctx))}


def started(ctx) -> SearchState:
    return step(seed, {}, ctx)


def prompts(candidates: list[Candidate]) -> list[str]:
    return [c["prompt"] for c in candidates]


def llm_batch(*texts: str) -> list[Candidate]:
    return [Candidate(prompt=t, source="llm") for t in texts]


def test_seed_starts_a_run_with_the_builtin_and_extra_seeds(ctx):
    from dataclasses import replace

    state = started(replace(ctx, seed_prompts=("my own seed",)))
    assert state["run_id"] == "test-run" and state["iteration"] == 0 and state["source"] == "seed"
    assert state["candidates"][-1] == {"prompt": "my own seed", "source": "seed"} and len(state["candidates"]) > 20
    assert {c["source"] for c in state["candidates"]} == {"seed"}
    assert state["stats"]["generated"] == len(state["candidates"])
    assert state["best"] is None and state["top"] == [] and state["route"] == "continue"


def test_seed_rejects_a_neuron_the_model_does_not_have(ctx):
    from dataclasses import replace

    from neuron_search.services.errors import UserError

    with pytest.raises(UserError, match="d_mlp"):
        started(replace(ctx, neuron=10_000))


def test_generate_asks_the_llm_and_parses_its_answer(ctx):
    state = step(generate, started(ctx), ctx)
    assert state["candidates"] == llm_batch("alpha one", "beta two", "gamma three")  # no top prompts: nothing to mutate
    assert state["source"] == "llm" and state["stats"]["llm_calls"] == 1 and state["stats"]["mutations"] == 0


TOP = [
    Record(prompt="the quick brown fox jumps", activation=1.0, token=" fox", source="seed", iteration=0),
    Record(prompt="1, 2, 4, 8, 16", activation=0.8, token=" 16", source="seed", iteration=0),
]


@pytest.mark.parametrize("batch_size", [4, 8])
def test_generate_fills_a_short_llm_batch_with_mutations_of_the_top_prompts(ctx, batch_size):
    from dataclasses import replace

    context = replace(ctx, batch_size=batch_size)
    state = {**started(context), "top": TOP}
    first = step(generate, state, context)
    assert first["candidates"][:3] == llm_batch("alpha one", "beta two", "gamma three")
    filler = first["candidates"][3:]
    assert len(filler) == batch_size - 3 and {c["source"] for c in filler} == {"mutation"}
    assert all(c["prompt"].strip() and c["prompt"] not in prompts(first["candidates"][:3]) for c in filler)
    words = set(" ".join(r["prompt"] for r in TOP).split())
    assert all(set(c["prompt"].split()) & words for c in filler)  # edits of the top prompts, not random text
    assert first["stats"]["mutations"] == batch_size - 3 and first["stats"]["generated"] == state["stats"]["generated"] + batch_size
    assert step(generate, state, context)["candidates"] == first["candidates"]  # seeded: a resumed run repeats them


def test_fill_none_measures_only_what_the_llm_wrote(ctx):
    from dataclasses import replace

    context = replace(ctx, fill="none")
    state = step(generate, {**started(context), "top": TOP}, context)
    assert state["candidates"] == llm_batch("alpha one", "beta two", "gamma three") and state["stats"]["mutations"] == 0


class Recording(FakeListChatModel):
    """A scripted chat model that keeps the text of every request it gets."""

    requests: list[str] = []

    def _call(self, messages, *args, **kwargs):
        self.requests.append("\n".join(m.content for m in messages))
        return super()._call(messages, *args, **kwargs)


def test_generate_shows_the_llm_the_records_and_the_hint(ctx):
    from dataclasses import replace

    model = Recording(responses=["x y z"], requests=[])
    context = replace(ctx, llm=register_chat_model(model), hint="fires on powers of two", run_id="hint-run")
    state = started(context)
    state["top"] = [Record(prompt="2 4 8 16", activation=1.5, token=" 16", source="seed", iteration=0)]
    state["rejected_similar"] = ["a dull near-copy"]
    step(generate, state, context)
    release_run(context, context.run_id)
    request = model.requests[0]
    assert "fires on powers of two" in request
    assert "2 4 8 16" in request and "1.500" in request and "a dull near-copy" in request


def test_a_failing_llm_is_counted_and_the_run_goes_on(ctx, monkeypatch):
    from dataclasses import replace

    import neuron_search.services.llm.proposer as proposer

    class Broken(FakeListChatModel):
        def _call(self, *args, **kwargs):
            raise ConnectionError("server went away")

    monkeypatch.setattr(proposer.time, "sleep", lambda s: None)
    context = replace(ctx, llm=register_chat_model(Broken(responses=["unused"])), run_id="broken")
    state = step(generate, started(context), context)
    with_tops = step(generate, {**started(context), "top": TOP}, context)
    release_run(context, context.run_id)
    assert state["candidates"] == [] and state["stats"]["llm_errors"] == 1
    # With top prompts to mutate, the batch is still full.
    assert [c["source"] for c in with_tops["candidates"]] == ["mutation"] * ctx.batch_size


def test_semantic_filter_cuts_long_prompts_and_rejects_duplicates(ctx):
    state = started(ctx)
    state["candidates"] = llm_batch("alpha " * 200, "same prompt", "same prompt", "   ")
    state["source"] = "llm"
    state = step(semantic_filter, state, ctx)
    services = services_for(ctx, "test-run")
    assert len(services.subject.token_ids(state["accepted"][0]["prompt"])) <= ctx.max_prompt_tokens
    assert state["accepted"][1:] == llm_batch("same prompt")
    assert state["stats"]["rejected_duplicate"] == 1 and state["stats"]["rejected_empty"] == 1


def test_semantic_filter_counts_a_whole_rejected_llm_batch_as_an_attempt(ctx):
    state = started(ctx)
    state = step(semantic_filter, state, ctx)
    state = step(measure_activation, state, ctx)
    state = step(update_records, state, ctx)
    state.update(candidates=llm_batch(state["top"][0]["prompt"]), source="llm")
    state = step(semantic_filter, state, ctx)
    assert state["accepted"] == [] and state["attempts"] == 1


def test_measure_then_update_records_keeps_top_and_bottom_k(ctx):
    state = step(semantic_filter, started(ctx), ctx)
    state = step(measure_activation, state, ctx)
    assert len(state["measured"]) == len(state["accepted"]) and not any(m["error"] for m in state["measured"])
    state = step(update_records, state, ctx)
    activations = sorted((m["activation"] for m in state["measured"]), reverse=True)
    assert [r["activation"] for r in state["top"]] == activations[:3]
    assert [r["activation"] for r in state["bottom"]] == sorted(activations)[:3]
    assert state["best"]["activation"] == activations[0]
    assert state["iteration"] == 1 and state["stats"]["measured"] == len(activations)
    assert len(services_for(ctx, "test-run").store) == len(activations)


def test_update_records_keeps_who_made_each_prompt(ctx):
    from dataclasses import replace

    ctx = replace(ctx, similarity_threshold=1.0)  # measure all three
    state = started(ctx)
    state["candidates"] = llm_batch("alpha one", "beta two") + [Candidate(prompt="gamma three", source="mutation")]
    state["source"] = "llm"
    for node in (semantic_filter, measure_activation, update_records):
        state = step(node, state, ctx)
    stored = {r["prompt"]: r["source"] for r in services_for(ctx, "test-run").store}
    assert stored == {"alpha one": "llm", "beta two": "llm", "gamma three": "mutation"}
    assert {r["prompt"]: r["source"] for r in state["top"]} == stored


def test_stagnation_check_routes(ctx):
    from dataclasses import replace

    state = started(ctx)
    state.update(iteration=1, since_improvement=0)
    assert step(stagnation_check, state, ctx)["route"] == "continue"
    state["since_improvement"] = ctx.patience
    stalled = step(stagnation_check, state, ctx)
    assert stalled["route"] == "stalled" and stalled["since_improvement"] == 0
    state["iteration"] = ctx.iterations
    done = step(stagnation_check, state, ctx)
    assert done["route"] == "done" and done["stop_reason"] == f"ran {ctx.iterations} iterations"
    target = replace(ctx, target=0.5)
    state.update(iteration=1, best=Record(prompt="p", activation=0.7, token="p", source="llm", iteration=1))
    assert step(stagnation_check, state, target)["route"] == "done"


def test_random_fallback_makes_a_batch_without_the_llm(ctx):
    state = started(ctx)
    state["top"] = [Record(prompt="the quick brown fox jumps", activation=1.0, token=" fox", source="seed", iteration=0)]
    first = step(random_fallback, state, ctx)
    again = step(random_fallback, state, ctx)
    assert first["source"] == "fallback" and len(first["candidates"]) == ctx.batch_size
    assert {c["source"] for c in first["candidates"]} == {"fallback"}
    assert first["candidates"] == again["candidates"]  # seeded: a resumed run makes the same prompts
    assert first["stats"]["fallback_batches"] == 1 and first["stats"]["llm_calls"] == 0

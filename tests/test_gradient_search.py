"""--strategy gradient and mixed: whole searches on the tiny GPT-2, no LLM needed for gradient."""

from __future__ import annotations

import importlib

import pytest
import torch

from neuron_search.context import SearchContext, fluency_weights, seeds_from_corpus
from neuron_search.testing.helpers import fresh_answers, scripted, tiny_settings
from neuron_search.api import NeuronSearch
from neuron_search.services.search.population import slot_loss, update_population
from neuron_search.state import Member

SEEDS = ("The quick brown fox jumps over the lazy dog.", "1, 2, 4, 8, 16, 32", "What is the capital of France?")


def gradient_search(tiny_model_dir, tmp_path, **settings) -> NeuronSearch:
    base = tiny_settings(
        tiny_model_dir, llm=scripted(["never asked"]), strategy="gradient",
        builtin_seeds=False, seed_prompts=SEEDS, seed_corpus=False, population=4, children=4, lead_children=4, results_dir=str(tmp_path),
        run_id="grad",
    )  # fmt: skip
    return NeuronSearch(**{**base, **settings})


def member(prompt: str, activation: float, xent: float) -> Member:
    return Member(prompt=prompt, ids=[1, 2], activation=activation, peak=1, xent=xent)


def test_each_slot_keeps_the_lowest_loss_of_its_weight():
    weights = [0.0, 1.0, 10.0]
    strong, fluent, both = member("strong", 5.0, 9.0), member("fluent", 1.0, 2.0), member("both", 3.5, 4.0)
    population = update_population([], [strong, fluent, both], weights)
    assert [m["prompt"] for m in population] == ["strong", "both", "fluent"]
    worse = member("worse", 0.5, 8.0)
    assert update_population(population, [worse], weights) == population  # elitist: nothing gets worse
    for slot, weight in enumerate(weights):
        assert slot_loss(population[slot], weight) == min(slot_loss(m, weight) for m in (strong, fluent, both))


def test_fluency_weights_are_log_spaced_over_the_range():
    weights = fluency_weights(SearchContext(population=5, fluency_range="0.1,10"))
    assert weights[0] == 0.1 and abs(weights[-1] - 10) < 1e-9 and abs(weights[2] - 1.0) < 1e-9
    lead, *readable = fluency_weights(SearchContext())  # the default: a lead of weight 0, then 0.1 .. 10
    assert lead == 0 and len(readable) == 7 and readable[-1] == pytest.approx(10)


def test_the_lead_keeps_the_highest_activation_and_unweighed_prompts_hold_no_readable_slot():
    weights = [0.0, 1.0]
    fluent = member("fluent", 1.0, 2.0)
    unweighed = Member(prompt="strong", ids=[1], activation=9.0, peak=0, xent=None)
    population = update_population([], [fluent, unweighed], weights)
    assert [m["prompt"] for m in population] == ["strong", "fluent"]
    with pytest.raises(ValueError):
        slot_loss(unweighed, 1.0)


def test_the_gradient_strategy_raises_the_best_activation_without_any_llm(tiny_model_dir, tmp_path):
    result = gradient_search(tiny_model_dir, tmp_path, iterations=8).run(progress=False)
    stats = result.stats
    assert stats["llm_calls"] == 0 and stats["gradient_batches"] >= 6
    seeds = [r for r in result.records if r["source"] == "seed"]
    children = [r for r in result.records if r["source"] == "gradient" and r["activation"] is not None]
    assert children and max(r["activation"] for r in children) > max(r["activation"] for r in seeds)
    assert result.best[1] > max(r["activation"] for r in seeds)
    # A prompt's cross-entropy is measured unless it is a child of the lead that did not beat the lead
    # (the run's best so far): every prompt that raised the best has one, and the population is bounded.
    measured = [r for r in result.records if r["activation"] is not None]
    assert all(r["xent"] is None or r["xent"] > 0 for r in measured)
    for iteration in sorted({r["iteration"] for r in measured}):
        before = max((r["activation"] for r in measured if r["iteration"] < iteration), default=float("-inf"))
        for r in measured:
            if r["iteration"] == iteration and (r["activation"] > before or r["source"] != "gradient"):
                assert r["xent"] is not None, r
    spared = sum(r["xent"] is None for r in measured)
    assert spared, "no child of the lead was spared its cross-entropy"
    # The report says how many prompts are off the chart and the front, and why.
    page = (tmp_path / "grad" / "report.html").read_text()
    assert f"The other {spared:,} measured prompts have none" in page
    assert 1 <= len(result.state["population"]) <= 4


def test_a_resumed_gradient_run_continues_from_its_population(tiny_model_dir, tmp_path):
    first = gradient_search(tiny_model_dir, tmp_path, iterations=4).run(progress=False)
    before = first.state["population"]
    resumed = NeuronSearch.resume("grad", results_dir=str(tmp_path), iterations=7).run(progress=False)
    weights = fluency_weights(resumed.context)
    for slot, weight in enumerate(weights):  # elitist slots: a resumed run never starts over
        assert slot_loss(resumed.state["population"][slot], weight) <= slot_loss(before[slot], weight)
    assert resumed.stats["gradient_batches"] == first.stats["gradient_batches"] + 3


def test_a_resumed_gradient_run_measures_what_an_unbroken_one_does(tiny_model_dir, tmp_path, monkeypatch):
    """Members' gradients are remembered across iterations; a resumed process starts with none
    remembered, and still proposes the same children as a run that never stopped."""
    import neuron_search.services.search.candidates as candidates_module

    def measured(result) -> list[tuple[str, float]]:
        return [(r["prompt"], r["activation"]) for r in result.records]

    straight = gradient_search(tiny_model_dir, tmp_path, iterations=7, run_id="straight").run(progress=False)
    gradient_search(tiny_model_dir, tmp_path, iterations=4, run_id="broken").run(progress=False)
    monkeypatch.setattr(candidates_module, "_members", type(candidates_module._members)())  # a new process
    resumed = NeuronSearch.resume("broken", results_dir=str(tmp_path), iterations=7).run(progress=False)
    assert resumed.stats["gradient_batches"] == straight.stats["gradient_batches"] >= 6
    assert sorted(measured(resumed)) == sorted(measured(straight))


def test_mixed_takes_turns_between_the_llm_and_the_gradient(tiny_model_dir, tmp_path):
    llm = scripted(fresh_answers(10))
    result = gradient_search(tiny_model_dir, tmp_path, strategy="mixed", llm=llm, iterations=5).run(progress=False)
    sources = {r["iteration"]: r["source"] for r in result.records if r["source"] in ("llm", "gradient")}
    assert sources == {1: "gradient", 2: "llm", 3: "gradient", 4: "llm"}


def test_seed_corpus_starts_the_search_from_the_neurons_top_real_text(tiny_model_dir, tmp_path, monkeypatch):
    from neuron_search.services.dataset.exemplars import exemplars, read_exemplars
    from neuron_search.services.runtime import subject_model

    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))  # the scan's cache, not the user's
    # Unset, --seed-corpus is on for a gradient run; the report then finds the dataset max.
    result = gradient_search(tiny_model_dir, tmp_path, seed_corpus=None, top_k=5, iterations=1).run(progress=False)
    real = exemplars(subject_model(str(tiny_model_dir), "cpu"), 1, 3, top_k=5).records
    seeds = {r["prompt"] for r in result.records if r["source"] == "seed"}
    assert {r["prompt"] for r in real} <= seeds and set(SEEDS) <= seeds
    assert result.best[1] >= real[0]["activation"] - 1e-6
    saved = read_exemplars(tmp_path, str(tiny_model_dir), 1, 3)
    assert saved is not None and saved["records"][0]["activation"] == pytest.approx(real[0]["activation"], abs=1e-6)
    report = (result.run_dir / "report.html").read_text()
    assert "Dataset max" in report and "No dataset max to compare with yet" not in report


def test_seed_corpus_is_on_by_default_for_the_gradient_and_off_for_the_llm():
    assert [seeds_from_corpus(SearchContext(strategy=s)) for s in ("llm", "gradient", "mixed")] == [False, True, True]
    assert not seeds_from_corpus(SearchContext(strategy="gradient", seed_corpus=False))
    assert seeds_from_corpus(SearchContext(strategy="llm", seed_corpus=True))


def test_a_gradient_batch_with_nothing_new_goes_to_the_fallback_not_round_in_circles():
    from neuron_search.graph.routing import after_filter

    state = {"accepted": [], "source": "gradient", "attempts": 0}
    assert after_filter(state, None) == "random_fallback"
    assert after_filter({**state, "source": "fallback"}, None) == "measure_activation"
    assert after_filter({**state, "source": "llm"}, None) == "generate"


def test_the_fluency_gradient_steers_the_readable_slots_and_leaves_a_zero_weight_alone(tiny_model_dir, tmp_path):
    def children(fluency_gradient: bool, fluency_range: str, name: str) -> list[dict]:
        result = gradient_search(
            tiny_model_dir, tmp_path, iterations=4, fluency_gradient=fluency_gradient, fluency_range=fluency_range,
            run_id=f"{name}-{fluency_gradient}",
        ).run(progress=False)  # fmt: skip
        return [r for r in result.records if r["source"] == "gradient" and r["activation"] is not None]

    # Weight 0: the fluency term is multiplied away, so the same children, to the token.
    assert [r["prompt"] for r in children(True, "0,0", "zero")] == [r["prompt"] for r in children(False, "0,0", "zero")]
    # A heavy weight on every slot (the tiny model's random weights predict almost uniformly, so its
    # gains are small, and so is the room to read better): the swaps are ranked by how likely the new
    # token is, so other children, which read better than those of the activation's gradient alone.
    # (On the bundled Gemma the difference is large: tests/test_gradient.py.)
    steered, unsteered = children(True, "1000,1000", "heavy"), children(False, "1000,1000", "heavy")
    assert {r["prompt"] for r in steered} != {r["prompt"] for r in unsteered}
    mean = lambda rows: sum(r["xent"] for r in rows) / len(rows)  # noqa: E731
    assert mean(steered) < mean(unsteered), (mean(steered), mean(unsteered))


def test_edits_change_prompt_lengths_and_without_them_lengths_stay(tiny_model_dir, tmp_path):
    def lengths(edits: int) -> tuple[set[int], set[int]]:
        result = gradient_search(tiny_model_dir, tmp_path, iterations=6, edits=edits, run_id=f"edits-{edits}").run(progress=False)
        by_source: dict[str, set[int]] = {"seed": set(), "gradient": set()}
        for r in result.records:
            if r["source"] in by_source and r["activation"] is not None:
                by_source[r["source"]].add(len(r["tokens"]))
        return by_source["seed"], by_source["gradient"]

    seeds, fixed = lengths(0)
    assert fixed and fixed <= seeds  # swaps keep every child at its parent's length
    seeds, edited = lengths(2)
    assert edited - seeds  # inserted or deleted tokens give children lengths no seed had


def test_readable_every_lets_only_the_lead_propose_in_the_batches_between(tiny_model_dir, tmp_path, monkeypatch):
    """--readable-every 2 (the default): the readable slots are ranked and propose children in every other
    gradient batch; the lead in every one. With 1 every member proposes every time."""
    module = importlib.import_module("neuron_search.nodes.gradient")
    real, asked = module.member_swaps, []

    def counted(subject, members, *args, **kwargs):
        asked.append(len(members))
        return real(subject, members, *args, **kwargs)

    monkeypatch.setattr(module, "member_swaps", counted)
    gradient_search(tiny_model_dir, tmp_path, iterations=6, readable_every=1, run_id="every-1").run(progress=False)
    assert len(asked) >= 4 and min(asked) > 1, asked
    asked.clear()
    gradient_search(tiny_model_dir, tmp_path, iterations=6, run_id="every-2").run(progress=False)
    assert len(asked) >= 4, asked
    assert all(n > 1 for n in asked[0::2]) and all(n == 1 for n in asked[1::2]), asked
    # Without a lead (every fluency weight above 0) there is no batch for the lead alone: every member
    # proposes in every batch, rather than none in every other one.
    asked.clear()
    gradient_search(tiny_model_dir, tmp_path, iterations=6, fluency_range="0.1,10", run_id="no-lead").run(progress=False)
    assert len(asked) >= 4 and min(asked) > 1, asked


def test_lead_distance_reaches_the_ranking_and_changes_the_leads_children(tiny_model_dir, tmp_path, monkeypatch):
    """--lead-distance with --lead-distance-stall 0 is handed to every ranking of the run (it lowers the
    gradient-alone scores only, tests/test_gradient.py), and with it the lead proposes other children than without."""
    module = importlib.import_module("neuron_search.nodes.gradient")
    real, asked = module.member_swaps, []

    def counted(subject, members, *args, **kwargs):
        asked.append(kwargs.get("distance"))
        return real(subject, members, *args, **kwargs)

    monkeypatch.setattr(module, "member_swaps", counted)
    runs = {}
    for distance in (0.0, 1.0):
        result = gradient_search(
            tiny_model_dir, tmp_path, iterations=3, lead_distance=distance, lead_distance_stall=0, run_id=f"distance-{distance}"
        ).run(progress=False)
        runs[distance] = [r["prompt"] for r in result.records if r["source"] == "gradient"]
    assert asked and set(asked) == {0.0, 1.0}, asked
    assert runs[0.0] and runs[1.0] and runs[0.0] != runs[1.0]


def test_lead_distance_stall_turns_the_penalty_on_only_while_the_lead_stalls(tiny_model_dir, tmp_path, monkeypatch):
    """--lead-distance-stall 1: a batch ranks the lead's swaps with --lead-distance exactly when the lead's
    previous batch had no child beat it, and with the gradient alone while it climbs; the stall is counted
    without --lead-patience, and the lead still moves only up."""
    module = importlib.import_module("neuron_search.nodes.gradient")
    real_swaps, real_moved, distances, stalls = module.member_swaps, module._moved_lead, [], []

    def swaps(subject, members, *args, **kwargs):
        distances.append(kwargs["distance"])
        return real_swaps(subject, members, *args, **kwargs)

    def moved(*args):
        population, stall = real_moved(*args)
        stalls.append(stall)
        return population, stall

    monkeypatch.setattr(module, "member_swaps", swaps)
    monkeypatch.setattr(module, "_moved_lead", moved)
    # The pooled draw: on the tiny model its lead both climbs and stalls within these iterations.
    result = gradient_search(
        tiny_model_dir, tmp_path, iterations=10, lead_uniform_positions=False, lead_distance=1.0, lead_distance_stall=1,
        run_id="stall-gated",
    ).run(progress=False)  # fmt: skip
    assert len(distances) == len(stalls) >= 5
    assert distances == [1.0 if stall >= 1 else 0.0 for stall in stalls], (distances, stalls)
    assert 0.0 in distances and 1.0 in distances and distances[0] == 0.0, distances
    assert result.stats["lead_moves"] == 0


def test_lead_distance_share_draws_the_rest_of_the_leads_children_from_the_gradient_alone(tiny_model_dir, tmp_path, monkeypatch):
    """--lead-distance-share 0.25 with --lead-distance 1: in every batch the lead's 8 children are 2 drawn from
    the penalised ranking and 6 from the gradient-alone ranking of the same lead; the readable slots' draws
    are untouched, and the default share (1) draws all 8 from the penalised ranking."""
    module = importlib.import_module("neuron_search.nodes.gradient")
    real, draws = module.propose_children, []

    def counted(subject, ranked, rng, children, *args, **kwargs):
        draws.append((ranked, children, kwargs.get("uniform_positions")))
        return real(subject, ranked, rng, children, *args, **kwargs)

    monkeypatch.setattr(module, "propose_children", counted)
    for share, near, far in ((0.25, 2, 6), (1.0, 8, 0)):
        draws.clear()
        gradient_search(
            tiny_model_dir, tmp_path, iterations=4, lead_children=8, lead_distance=1.0, lead_distance_stall=0,
            lead_distance_share=share, run_id=f"share-{share}",
        ).run(progress=False)  # fmt: skip
        lead = [(ranked, n) for ranked, n, uniform in draws if uniform]
        assert lead and all(n in (near, far) for _, n in lead), lead
        if far:
            pairs = list(zip(lead[0::2], lead[1::2]))
            assert pairs and all(a[1] == near and b[1] == far for a, b in pairs), lead
            # One lead, two rankings: the same row, the penalty moving which tokens are ranked highest.
            assert all(a[0].row == b[0].row for a, b in pairs)
            assert any(not torch.equal(a[0].tokens, b[0].tokens) for a, b in pairs)
        else:
            assert all(n == near for _, n in lead), lead
        assert all(n == 4 for _, n, uniform in draws if not uniform)  # --children of each readable slot


def test_the_lead_moves_to_its_best_child_after_patience_iterations_without_a_better_one(tiny_model_dir):
    """--lead-patience: the stall count grows while the lead is still the parent of the last batch's
    children; at the patience it moves to the best of them, lower than itself (GCG's step), and a lead
    that changed since its children were proposed starts the count again."""
    from neuron_search.nodes.gradient import _moved_lead
    from neuron_search.services.runtime import subject_model

    tiny_model = subject_model(str(tiny_model_dir), "cpu")
    lead = Member(prompt="lead", ids=tiny_model.token_ids("lead"), activation=5.0, peak=0, xent=None)
    other = Member(prompt="other", ids=tiny_model.token_ids("other"), activation=1.0, peak=0, xent=2.0)

    def measured(prompt: str, activation: float) -> dict:
        return {"prompt": prompt, "activation": activation, "peak": 0, "xent": None, "error": ""}

    state = {
        "source": "gradient", "lead_parent": lead, "lead_stall": 0,
        "measured": [measured("a", 3.0), measured("b", 4.0), measured("c", 4.5)],
        "accepted": [{"prompt": "a", "lead": True}, {"prompt": "b", "lead": True}, {"prompt": "c", "lead": False}],
    }  # fmt: skip
    population = [lead, other]
    ctx = SearchContext(lead_patience=2)
    same, stall = _moved_lead(state, population, 0, ctx, tiny_model)
    assert same is population and stall == 1
    moved, stall = _moved_lead({**state, "lead_stall": 1}, population, 0, ctx, tiny_model)
    assert stall == 0 and moved[1] is other
    assert moved[0]["prompt"] == "b" and moved[0]["activation"] == 4.0  # the lead's best child, not a readable slot's
    assert moved[0]["ids"] == tiny_model.token_ids("b")
    changed, stall = _moved_lead({**state, "lead_stall": 1}, [other, other], 0, ctx, tiny_model)
    assert stall == 0 and changed[0] is other
    # A batch of another source in between (the fallback's, after a batch without a rise): the gradient
    # batch before it still counts, but its children are gone, so the lead moves at the next chance.
    after_fallback, stall = _moved_lead({**state, "source": "fallback", "lead_stall": 1}, population, 0, ctx, tiny_model)
    assert after_fallback is population and stall == 2
    later, stall = _moved_lead({**state, "lead_stall": 2}, population, 0, ctx, tiny_model)
    assert later[0]["prompt"] == "b" and stall == 0


def test_a_patient_lead_moves_in_a_whole_run_and_the_best_ever_stays(tiny_model_dir, tmp_path):
    # The pooled draw: on the tiny model its lead runs out of better children within these iterations.
    steady = gradient_search(tiny_model_dir, tmp_path, iterations=10, lead_uniform_positions=False, run_id="steady").run(progress=False)
    moving = gradient_search(
        tiny_model_dir, tmp_path, iterations=10, lead_uniform_positions=False, lead_patience=1, run_id="moving"
    ).run(progress=False)
    assert steady.stats["lead_moves"] == 0 and moving.stats["lead_moves"] >= 1
    measured = [r for r in moving.records if r["activation"] is not None]
    assert moving.best[1] == max(r["activation"] for r in measured)
    # The lead may sit below the best ever; the records and the top table keep the best.
    assert moving.state["population"][0]["activation"] <= moving.best[1]


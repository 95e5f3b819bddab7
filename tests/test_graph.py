"""Whole-graph runs on the tiny GPT-2 with a scripted proposer."""

from __future__ import annotations

import pkgutil

import neuron_search.nodes as nodes_package
from neuron_search.graph import build_graph
from neuron_search.graph.builder import NODE_NAMES
from neuron_search.testing.helpers import fresh_answers, scripted, tiny_settings
from neuron_search.api import NeuronSearch
from neuron_search.services.storage.record_store import RecordStore


class Recorder:
    """A progress display that keeps every state it is shown."""

    def __init__(self) -> None:
        self.states = []

    def update(self, state, context) -> None:
        self.states.append(state)

    def close(self) -> None:
        pass


def tiny_search(tiny_model_dir, tmp_path, llm, **settings) -> NeuronSearch:
    base = tiny_settings(tiny_model_dir, llm=llm, strategy="llm", batch_size=4,
                results_dir=str(tmp_path))
    return NeuronSearch(**{**base, **settings})


def test_graph_has_the_ten_nodes_and_conditional_edges():
    drawn = build_graph().compile().get_graph()
    nodes = set(drawn.nodes) - {"__start__", "__end__"}
    assert nodes == set(NODE_NAMES) and len(NODE_NAMES) == 10
    # One node per module of nodes/, named as its module: a node written but not wired (or the reverse) fails.
    assert set(NODE_NAMES) == {m.name for m in pkgutil.iter_modules(nodes_package.__path__)}
    conditional = {(e.source, e.target) for e in drawn.edges if e.conditional}
    plain = {(e.source, e.target) for e in drawn.edges if not e.conditional}
    assert {("stagnation_check", "explain"), ("stagnation_check", "hypothesize")} <= conditional
    assert {("hypothesize", "generate"), ("explain", "__end__")} <= plain
    assert ("stagnation_check", "generate") in conditional
    assert ("stagnation_check", "random_fallback") in conditional
    assert ("stagnation_check", "__end__") in conditional
    assert ("semantic_filter", "measure_activation") in conditional


def test_records_grow_and_best_never_decreases(tiny_model_dir, tmp_path):
    recorder = Recorder()
    search = tiny_search(tiny_model_dir, tmp_path, scripted(fresh_answers(20)), iterations=6)
    result = search.run(progress=recorder)

    measured = [s["stats"]["measured"] for s in recorder.states]
    assert measured == sorted(measured) and measured[-1] > measured[0] > 0
    bests = [s["best"]["activation"] for s in recorder.states]
    assert bests == sorted(bests)
    assert result.state["iteration"] == 6 and result.stop_reason == "ran 6 iterations"
    assert len(result.records) == result.stats["measured"]
    assert result.best[1] == max(r["activation"] for r in result.records)
    assert {r["source"] for r in result.records} >= {"seed", "llm"}


def test_a_proposer_that_repeats_itself_is_caught_and_routed_to_the_fallback(tiny_model_dir, tmp_path):
    same = "the same prompt again\nanother fixed prompt"
    search = tiny_search(tiny_model_dir, tmp_path, scripted([same]), iterations=4, max_attempts=2, fill="none")
    result = search.run(progress=False)
    stats = result.stats
    assert stats["rejected_duplicate"] >= 2 * 3  # every regeneration repeats both prompts
    assert stats["regenerations"] >= 2
    assert stats["fallback_batches"] >= 1
    assert any(r["source"] == "fallback" for r in result.records)


def test_mutations_keep_batches_full_when_the_proposer_repeats_itself(tiny_model_dir, tmp_path):
    same = "the same prompt again\nanother fixed prompt"
    search = tiny_search(tiny_model_dir, tmp_path, scripted([same]), iterations=4, similarity_threshold=1.0)
    result = search.run(progress=False)
    after_seeds = [r for r in result.records if r["iteration"] > 0]
    # Mutations top each LLM batch up to 4 before the filter: 2 LLM prompts + 2 mutations in
    # iterations 1 to 3; from iteration 2 on the LLM's two are repeats, rejected, and yet no batch is
    # empty, so the LLM is not asked again.
    assert [r["source"] for r in after_seeds].count("llm") == 2
    assert [r["source"] for r in after_seeds].count("mutation") == 6 == result.stats["mutations"]
    assert result.stats["rejected_duplicate"] == 4 and result.stats["regenerations"] == 0


def test_patience_routes_a_stalled_search_to_the_fallback(tiny_model_dir, tmp_path):
    search = tiny_search(tiny_model_dir, tmp_path, scripted(fresh_answers(30)), iterations=8, patience=1, min_improvement=1e9)
    result = search.run(progress=False)
    assert result.stats["fallback_batches"] >= 3


def test_budgets_stop_the_run(tiny_model_dir, tmp_path):
    llm = scripted(fresh_answers(40))
    by_prompts = tiny_search(tiny_model_dir, tmp_path, llm, run_id="p", iterations=100, max_prompts=40).run(progress=False)
    assert by_prompts.stop_reason == "measured 40 prompts" and by_prompts.stats["measured"] == 40  # the last batch is trimmed

    by_target = tiny_search(tiny_model_dir, tmp_path, llm, run_id="t", iterations=100, target=-1e9).run(progress=False)
    assert by_target.stop_reason.startswith("reached the target") and by_target.state["iteration"] == 1

    by_calls = tiny_search(tiny_model_dir, tmp_path, llm, run_id="c", iterations=100, max_llm_calls=3).run(progress=False)
    assert by_calls.stop_reason == "made 3 LLM calls" and by_calls.stats["llm_calls"] == 3

    by_time = tiny_search(tiny_model_dir, tmp_path, llm, run_id="s", iterations=10_000, time_limit=0.5).run(progress=False)
    assert by_time.stop_reason.startswith("reached the time limit") and by_time.state["iteration"] < 10_000


def test_state_stays_bounded_as_prompts_accumulate(tiny_model_dir, tmp_path):
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer()
    sizes = {}

    class Sizes(Recorder):
        def update(self, state, context) -> None:
            measured = state["stats"]["measured"]
            for mark in (100, 2000):
                if measured >= mark and mark not in sizes:
                    sizes[mark] = len(serde.dumps_typed(state)[1])

    search = tiny_search(
        tiny_model_dir, tmp_path, scripted(fresh_answers(60, per_answer=50)),
        batch_size=50, iterations=1000, max_prompts=2000, similarity_threshold=1.0,
    )
    result = search.run(progress=Sizes())
    assert result.stats["measured"] >= 2000
    assert sizes[2000] <= 2 * sizes[100]


def test_a_last_position_run_names_the_last_token_as_the_peak_everywhere(tiny_model_dir, tmp_path):
    result = tiny_search(tiny_model_dir, tmp_path, scripted(fresh_answers(5)), iterations=3, position="last").run(progress=False)
    records = [r for r in result.records if r["activation"] is not None]
    assert records and all(r["token"] == r["tokens"][-1] for r in records)
    assert all(abs(r["activation"] - r["values"][-1]) < 1e-6 for r in records)
    by_prompt = {r["prompt"]: r for r in records}
    for kept in result.state["top"] + result.state["bottom"]:  # what the LLM is shown as "peak at"
        assert kept["token"] == by_prompt[kept["prompt"]]["tokens"][-1]


def test_resuming_with_a_larger_top_k_brings_back_the_records_the_smaller_table_dropped(tiny_model_dir, tmp_path):
    first = tiny_search(tiny_model_dir, tmp_path, scripted(fresh_answers(10)), iterations=3, top_k=3, run_id="grow").run(progress=False)
    assert len(first.state["top"]) == 3 and len(first.records) > 10
    resumed = NeuronSearch.resume("grow", results_dir=str(tmp_path), top_k=10, iterations=4).run(progress=False)
    from neuron_search.services.search.findings import as_record, distinct_findings

    measured = sorted((r for r in resumed.records if r["activation"] is not None), key=lambda r: -r["activation"])
    highest = distinct_findings(as_record(r) for r in measured)
    lowest = distinct_findings(as_record(r) for r in measured[::-1])
    assert len(highest) > 10
    assert [r["prompt"] for r in resumed.state["top"]] == [r["prompt"] for r in highest[:10]]
    assert [r["prompt"] for r in resumed.state["bottom"]] == [r["prompt"] for r in lowest[:10]]


def test_a_prompt_and_its_tails_after_the_peak_are_one_finding_in_the_top_k(tiny_model_dir, tmp_path):
    from neuron_search.services.model.subject_model import SubjectModel

    subject = SubjectModel.load(str(tiny_model_dir), "cpu")
    # A prompt whose peak comes before its end, and tails after it that stay below the peak.
    base = next(
        m for m in subject.measure([f"{w} river stone cloud" for w in ("alpha", "beta", "gamma", "seven", "copper")], 1, 3)
        if m["peak"] < len(m["tokens"]) - 1
    )
    tails = [base["prompt"] + t for t in (" orbit", " ledger engine", " violet ninety")]
    same = [m["prompt"] for m in subject.measure(tails, 1, 3) if abs(m["activation"] - base["activation"]) < 1e-6]
    assert len(same) >= 2, "the tiny model's tails should leave the peak alone"
    seeds = tuple(same) + (base["prompt"],) + ("1, 2, 4, 8", "What is the capital of France?")
    result = tiny_search(tiny_model_dir, tmp_path, scripted(fresh_answers(3)), iterations=1, builtin_seeds=False, seed_prompts=seeds).run(progress=False)

    top = result.state["top"]
    folded = [r for r in top if r["prompt"] in same + [base["prompt"]]]
    assert [r["prompt"] for r in folded] == [base["prompt"]]  # one finding, in its shortest form
    assert len({(r["finding"], round(r["activation"], 4)) for r in top}) == len(top)
    assert [r["prompt"] for r in result.top(10)] == [r["prompt"] for r in top]

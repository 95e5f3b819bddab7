"""runs/lifecycle.open_run: what every way into a search (CLI, API, Studio) does around it."""

from __future__ import annotations

import dataclasses

import pytest

from neuron_search.context import SearchContext
from neuron_search.testing.helpers import fresh_answers, scripted, tiny_context
from neuron_search.services import runtime
from neuron_search.services.errors import UserError
from neuron_search.runs.lifecycle import open_run
from neuron_search.services.storage.run_folder import run_id_for


def test_a_second_search_of_the_same_run_in_the_same_process_is_refused(tiny_model_dir, tmp_path):
    ctx = tiny_context(tiny_model_dir, tmp_path, scripted(["unused"]))
    with open_run(ctx):
        with pytest.raises(UserError, match="is being run right now"):
            with open_run(ctx):
                pass
    with open_run(ctx):  # released: the run can be continued
        pass


def test_bad_settings_are_refused_before_the_folder_is_made(tiny_model_dir, tmp_path):
    ctx = dataclasses.replace(tiny_context(tiny_model_dir, tmp_path, "embedded"), batch_size=0, position="middle")
    with pytest.raises(UserError, match="--batch-size must be at least 1; --position is max or last"):
        with open_run(ctx):
            pass
    assert not (tmp_path / ctx.run_id).exists()


def test_a_finished_search_leaves_run_json_and_the_results_and_releases_the_run(tiny_model_dir, tmp_path):
    from neuron_search.graph import build_graph

    ctx = tiny_context(tiny_model_dir, tmp_path, scripted(fresh_answers(4)), iterations=2)
    with open_run(ctx) as folder:
        build_graph().compile().invoke({}, context=ctx)
        assert folder.resolve() in runtime._runs
    assert folder.resolve() not in runtime._runs  # the record store is closed and the index forgotten
    assert {"run.json", "records.sqlite", "results.json", "records.csv", "report.html"} <= {p.name for p in folder.iterdir()}


def test_a_run_without_an_id_is_named_after_its_langgraph_thread():
    ctx = SearchContext()
    assert run_id_for(ctx, "1f0a-thread") == "studio-1f0a-thread"
    assert run_id_for(dataclasses.replace(ctx, run_id="mine"), "1f0a-thread") == "mine"
    assert run_id_for(ctx, None) != run_id_for(ctx, None)  # a new one each time

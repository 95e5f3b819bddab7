"""Issue #3: `--resume RUN_ID` continues a stopped or killed run where it stopped.

Same best, top-k and counters, the semantic filter rebuilt from the record store, and nothing that
was written lost: a run killed with SIGKILL mid-batch loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from neuron_search import run
from neuron_search.testing.helpers import scripted, tiny_settings
from neuron_search.graph import steps_per_iteration
from neuron_search.api import NeuronSearch
from scripted_run import register_scripted, start, stored_rows, tiny_args, wait_for_iteration
from neuron_search.services.reports.results import saved_state


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at 80 columns when captured; a wide console keeps each message on one line."""
    monkeypatch.setenv("COLUMNS", "400")


def cli(capsys, *args: str) -> tuple[int, str]:
    """run.main in this process: its exit code and its output with whitespace collapsed."""
    code = run.main(list(args))
    return code, " ".join(capsys.readouterr().out.split())


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A results folder holding run "done": neuron 3 of layer 1 of the tiny GPT-2."""
    results = tmp_path_factory.mktemp("results")
    NeuronSearch(**tiny_settings(
        tiny_model_dir, llm=scripted(["unused"]), strategy="llm",
        results_dir=str(results), run_id="done", builtin_seeds=False, seed_prompts=("A seed prompt.",), iterations=0,
    )).run(progress=False)  # fmt: skip
    return results


def test_resuming_a_run_that_does_not_exist_says_where_to_look(capsys, finished_run):
    code, out = cli(capsys, "--resume", "no-such-run", "--results-dir", str(finished_run), "--quiet")
    assert code == 2
    assert f"There is no run 'no-such-run' in {finished_run}/ to resume" in out and "python run.py --list" in out
    assert not (finished_run / "no-such-run").exists()


@pytest.mark.parametrize(
    ("option", "value", "saved"),
    [("--neuron", "4", "neuron=3, not 4"), ("--layer", "0", "layer=1, not 0"), ("--model", "gpt2", "not 'gpt2'"),
     ("--position", "last", "position='max', not 'last'")],
)  # fmt: skip
def test_resuming_with_another_model_layer_or_neuron_is_refused(option, value, saved, capsys, finished_run):
    settings = (finished_run / "done" / "run.json").read_text()
    code, out = cli(capsys, "--resume", "done", "--results-dir", str(finished_run), option, value, "--quiet")
    assert code == 2
    assert f"Run done was made with {option[2:]}" in out and saved in out and "start a new run" in out
    assert (finished_run / "done" / "run.json").read_text() == settings


class InterruptAfter:
    """A progress display that presses Ctrl-C (a real SIGINT to this process) after n batches."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.states: list[dict] = []

    def update(self, state, context) -> None:
        self.states.append(state)
        if len(self.states) == self.n:
            # The search's own handler must catch it, or it would stop pytest itself.
            assert signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)

    def close(self) -> None:
        pass


def activations_ranked(rows: list[tuple]) -> list[float]:
    """The activations of the distinct findings, highest first (a prompt and its tails after the
    peak are one finding: services/search/findings.py), read from raw store rows."""
    findings = {
        ("".join(json.loads(r[6])[: r[10] + 1]), round(r[4], 4)): r[4] for r in rows if r[4] is not None
    }
    return sorted(findings.values(), reverse=True)


def test_resume_after_an_interrupted_run_continues_the_counters_and_keeps_every_record(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "interrupted"
    first = NeuronSearch(**tiny_settings(
        tiny_model_dir, llm=register_scripted(), strategy="llm", batch_size=4,
        similarity_threshold=0.99, max_attempts=1, results_dir=str(tmp_path), run_id="interrupted", iterations=6,
    )).run(progress=InterruptAfter(3))  # fmt: skip
    assert first.stop_reason == "stopped by the user" and first.state["iteration"] == 3
    before = stored_rows(run_dir / "records.sqlite")
    assert len(before) == first.stats["measured"] + first.stats["failed"]

    register_scripted()  # what a new process does: its answers start again from the first
    resumed = InterruptAfter(0)
    second = NeuronSearch.resume("interrupted", results_dir=str(tmp_path)).run(progress=resumed)

    assert second.stop_reason == "ran 6 iterations"
    assert [s["iteration"] for s in resumed.states] == [4, 5, 6]  # the counters go on, not from 0
    after = stored_rows(run_dir / "records.sqlite")
    assert after[: len(before)] == before  # every record kept, unchanged
    assert all(second.stats[name] >= value for name, value in first.stats.items())
    assert second.stats["measured"] + second.stats["failed"] == len(after)
    assert resumed.states[0]["best"]["activation"] >= first.best[1]  # the best was carried over
    ranked = activations_ranked(after)
    assert second.best[1] == ranked[0] and [r["activation"] for r in second.state["top"]] == ranked[:10]
    # The semantic filter was rebuilt from the store: the answers proposed again are rejected, none measured twice.
    assert second.stats["rejected_duplicate"] >= first.stats["llm_calls"] * 4
    prompts = [r[3] for r in after]
    assert len(set(prompts)) == len(prompts)


def test_a_run_killed_mid_batch_loses_nothing_written_and_resumes_from_the_command_line(tiny_model_dir, tmp_path):
    run_dir, store = tmp_path / "killed", tmp_path / "killed" / "records.sqlite"
    process = start(*tiny_args(tiny_model_dir, tmp_path, "killed", "--iterations", "100000"))
    wait_for_iteration(store, 3, process)
    process.kill()  # SIGKILL: no handler, no cleanup, wherever it was in its batch
    process.communicate(timeout=60)
    written = stored_rows(store)
    at_kill = saved_state(run_dir)
    last = max(r[0] for r in written)

    resumed = start("--resume", "killed", "--results-dir", str(tmp_path), "--iterations", str(last + 3), "--quiet")
    out, err = resumed.communicate(timeout=300)

    assert resumed.returncode == 0, out + err
    stopped = re.findall(r"Stopped: [^\n]*", out)
    assert stopped == [f"Stopped: ran {last + 3} iterations."], out[-3000:]
    after = stored_rows(store)
    assert set(written) <= set(after)  # nothing that was written is lost or changed
    assert len({(r[0], r[1]) for r in after}) == len(after)
    state = saved_state(run_dir)
    assert state["iteration"] == last + 3 and state["stats"]["llm_calls"] > at_kill["stats"]["llm_calls"]
    # The batch in flight was redone once: the counters match the store, nothing counted twice.
    assert state["stats"]["measured"] + state["stats"]["failed"] == len(after)
    assert max(r[0] for r in after) == last + 2
    prompts = [r[3] for r in after]
    assert len(set(prompts)) == len(prompts)  # the rebuilt filter let nothing be measured twice
    ranked = activations_ranked(after)
    assert state["best"]["activation"] == ranked[0] and [r["activation"] for r in state["top"]] == ranked[:10]
    db = sqlite3.connect(store)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_a_kill_after_a_node_saved_its_writes_but_before_the_checkpoint_is_resumed_not_taken_as_finished(
    tiny_model_dir, tmp_path
):
    """SIGKILL can land between LangGraph saving a node's writes and saving the next checkpoint:
    the saved state then has no node left to start, only a task whose result waits to be applied."""
    run_dir = tmp_path / "window"
    settings = tiny_settings(
        tiny_model_dir, strategy="llm", batch_size=4, similarity_threshold=0.99,
        max_attempts=1, results_dir=str(tmp_path), run_id="window", explain=False,  # the search's checkpoints only
    )  # fmt: skip
    NeuronSearch(llm=register_scripted(), iterations=3, **settings).run(progress=False)
    # Cut the checkpoint history back to the one before update_records of the last batch: its
    # writes (the stored batch, the new top-k) stay saved against that checkpoint, as after such a kill.
    db = sqlite3.connect(run_dir / "checkpoints.sqlite")
    rows = db.execute("SELECT checkpoint_id FROM checkpoints ORDER BY checkpoint_id").fetchall()
    graph_state = None
    for (checkpoint_id,) in reversed(rows):
        db.execute("DELETE FROM checkpoints WHERE checkpoint_id > ?", (checkpoint_id,))
        db.execute("DELETE FROM writes WHERE checkpoint_id > ?", (checkpoint_id,))
        db.commit()
        graph_state = saved_state(run_dir)
        if graph_state.get("measured") and graph_state["iteration"] == 2:
            break  # measured, not yet recorded: update_records' writes wait against this checkpoint
    db.close()
    assert graph_state and graph_state["iteration"] == 2
    stored = stored_rows(run_dir / "records.sqlite")

    register_scripted()
    resumed = InterruptAfter(0)
    result = NeuronSearch.resume("window", results_dir=str(tmp_path), iterations=5).run(progress=resumed)

    assert result.stop_reason == "ran 5 iterations"
    assert [s["iteration"] for s in resumed.states] == [3, 4, 5]
    after = stored_rows(run_dir / "records.sqlite")
    assert after[: len(stored)] == stored
    assert result.stats["measured"] + result.stats["failed"] == len(after)  # the saved batch counted once


def test_the_time_a_run_lay_stopped_does_not_count_against_its_time_limit(tiny_model_dir, tmp_path, monkeypatch):
    settings = tiny_settings(
        tiny_model_dir, strategy="llm", batch_size=4, similarity_threshold=0.99,
        max_attempts=1, results_dir=str(tmp_path), run_id="clock",
    )  # fmt: skip
    first = NeuronSearch(llm=register_scripted(), iterations=2, **settings).run(progress=False)
    # The run lies stopped for an hour, far longer than its whole time limit.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600.0)
    register_scripted()
    limit = first.state["elapsed"] + 600.0
    resumed = NeuronSearch.resume("clock", results_dir=str(tmp_path), iterations=4, time_limit=limit).run(progress=False)
    assert resumed.stop_reason == "ran 4 iterations", resumed.state["elapsed"]
    assert resumed.state["elapsed"] < limit


def test_the_checkpoint_file_keeps_one_iteration_however_long_the_run(tiny_model_dir, tmp_path):
    settings = tiny_settings(
        tiny_model_dir, strategy="llm", batch_size=4, similarity_threshold=0.99,
        max_attempts=1, results_dir=str(tmp_path),
    )  # fmt: skip
    kept = {}
    for iterations in (2, 12):
        run_id = f"long{iterations}"
        NeuronSearch(llm=register_scripted(), iterations=iterations, run_id=run_id, **settings).run(progress=False)
        db = sqlite3.connect(tmp_path / run_id / "checkpoints.sqlite")
        kept[iterations] = db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
        db.close()
    assert kept[12] <= kept[2] <= steps_per_iteration(1) + 1

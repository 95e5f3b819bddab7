"""Issue #32: what a form, a command line or a full disk sends in never writes outside the results
folder, never leaves a run unusable, and never loses a measurement.

Each test names the item of the issue it reproduces; each failed on the code before the fix."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from neuron_search import run
from neuron_search.context import SearchContext, as_context
from neuron_search.testing.helpers import fresh_answers, scripted, tiny_settings
from neuron_search.api import NeuronSearch
from neuron_search.services.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")


def cli(capsys, *args: str) -> tuple[int, str]:
    """run.main in this process: its exit code and its output with whitespace collapsed."""
    code = run.main(list(args))
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def tiny(model_dir: Path, results: Path, **overrides) -> dict:
    settings = tiny_settings(
        model_dir, llm=scripted(fresh_answers(40)), strategy="llm",
        batch_size=4, iterations=2, results_dir=str(results), explain=False,
    )  # fmt: skip
    return {**settings, **overrides}


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> Path:
    """A results folder holding the finished run "done"."""
    results = tmp_path_factory.mktemp("results")
    NeuronSearch(**tiny(tiny_model_dir, results, run_id="done")).run(progress=False)
    return results


# 1. Paths from outside -------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["../elsewhere", "../../elsewhere", "ABSOLUTE", ".", "a/b", ".."])
def test_a_run_id_that_is_a_path_is_refused_through_the_api_and_nothing_is_written(tiny_model_dir, tmp_path, run_id):
    results = tmp_path / "results"
    results.mkdir()
    absolute = tmp_path / "absolute-run"
    before = files_under(tmp_path)
    with pytest.raises(UserError, match="is not a valid name"):
        NeuronSearch(**tiny(tiny_model_dir, results, run_id=str(absolute) if run_id == "ABSOLUTE" else run_id)).run(progress=False)
    assert files_under(tmp_path) == before and not absolute.exists()


def test_a_run_id_that_is_a_path_is_refused_by_every_command(capsys, finished):
    (finished.parent / "outside").mkdir(exist_ok=True)
    before = files_under(finished.parent)
    for command in (
        ["--run-id", "../outside", "--results-dir", str(finished), "--quiet"],
        ["--resume", "../outside", "--results-dir", str(finished), "--quiet"],
        ["report", "../outside", "--results-dir", str(finished)],
        ["explain", "../outside", "--results-dir", str(finished)],
        ["sweep", "--layer", "1", "--neurons", "0:2", "--sweep-id", "../outside", "--results-dir", str(finished), "--ray", "off"],
    ):
        code, out = cli(capsys, *command)
        assert code == 2 and "is not a valid name" in out, (command, out)
    assert files_under(finished.parent) == before


def test_a_link_named_like_a_run_that_leads_outside_is_refused(tiny_model_dir, tmp_path):
    results, outside = tmp_path / "results", tmp_path / "outside"
    results.mkdir()
    outside.mkdir()
    (results / "linked").symlink_to(outside)
    with pytest.raises(UserError, match="leads outside"):
        NeuronSearch(**tiny(tiny_model_dir, results, run_id="linked")).run(progress=False)
    assert list(outside.iterdir()) == []


def _run_factory(context: dict, thread_id: str = "t1") -> None:
    """What LangGraph's server does to execute a run: enter graph/studio.py's factory with the form."""
    from neuron_search.graph.studio import make_graph

    runtime = SimpleNamespace(execution_runtime=SimpleNamespace(context=context))

    async def enter() -> None:
        async with make_graph({"configurable": {"thread_id": thread_id}}, runtime):
            pass

    asyncio.run(enter())


def test_the_server_form_cannot_choose_folders_or_models_or_escape_the_results_folder(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("NEURON_SEARCH_FORM_PATHS", raising=False)
    monkeypatch.chdir(tmp_path)  # the server's own results folder is ./results
    before = files_under(tmp_path)
    for form in (
        {"results_dir": str(tmp_path / "elsewhere")},
        {"model": str(tiny_model_dir)},
        {"embedder": "/etc"},
        {"sweep_table": str(tmp_path / "any.sqlite")},
    ):
        with pytest.raises(UserError, match="does not let the form choose") as error:
            _run_factory(form)
        assert next(iter(form)) in str(error.value)
    with pytest.raises(UserError, match="is not a valid name"):
        _run_factory({"run_id": "../../elsewhere"})
    assert files_under(tmp_path) == before


def test_the_operator_can_let_the_form_choose_paths_but_not_escape_the_results_folder(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_SEARCH_FORM_PATHS", "1")
    form = tiny(tiny_model_dir, tmp_path / "results", llm="embedded")
    before = files_under(tmp_path)
    for run_id in ("../../elsewhere", ".", str(tmp_path / "abs")):
        with pytest.raises(UserError, match="is not a valid name"):
            _run_factory({**form, "run_id": run_id})
    assert files_under(tmp_path) == before
    _run_factory({**form, "run_id": "fine"})
    assert (tmp_path / "results" / "fine" / "run.json").is_file()


def test_form_values_are_coerced_and_checked_by_type():
    ctx = as_context({"batch_size": "8", "temperature": "0.5", "explain": "false", "seed_prompts": "hello world"})
    assert (ctx.batch_size, ctx.temperature, ctx.explain, ctx.seed_prompts) == (8, 0.5, False, ("hello world",))
    # LangGraph's server may hand over the dataclass it built from the form, with the form's types.
    assert as_context(SearchContext(batch_size="8", seed_prompts=["a", "b"])).batch_size == 8
    with pytest.raises(UserError, match="--batch-size takes a whole number, not 'eight'"):
        as_context({"batch_size": "eight"})
    with pytest.raises(UserError, match="--population takes a whole number, not 2.5"):
        as_context({"population": 2.5})
    with pytest.raises(UserError, match="--seed-prompts takes a list of texts"):
        as_context({"seed_prompts": [1, 2]})


# 2. A full disk --------------------------------------------------------------------------------


def _cli_process(*args: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess; with `file_size_limit`, no file may grow past that many
    bytes (RLIMIT_FSIZE, what a full disk looks like to a writer: EFBIG)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANGSMITH_TRACING": "false", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
        preexec_fn=limit if file_size_limit else None,
    )  # fmt: skip


def test_a_write_failure_leaves_run_json_whole_and_the_run_usable(tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    NeuronSearch(**tiny(tiny_model_dir, results, run_id="r", llm="embedded", iterations=0)).run(progress=False)
    saved = (results / "r" / "run.json").read_text()
    # A resume with another budget rewrites run.json, with writes failing past 64 bytes.
    failed = _cli_process("--resume", "r", "--results-dir", str(results), "--iterations", "1", "--quiet", file_size_limit=64)
    assert failed.returncode != 0
    assert "Cannot write to the results folder" in " ".join((failed.stdout + failed.stderr).split())
    assert (results / "r" / "run.json").read_text() == saved
    assert not [p for p in (results / "r").iterdir() if p.name.endswith(".tmp")]
    for args in (["report", "r", "--results-dir", str(results)], ["--list", "--results-dir", str(results)]):
        done = _cli_process(*args)
        assert done.returncode == 0, done.stdout + done.stderr
    listed = _cli_process("--list", "--results-dir", str(results)).stdout
    assert any(line.split()[:1] == ["r"] or " r " in line for line in listed.splitlines()), listed


def test_a_damaged_run_json_is_one_clear_message_and_list_shows_it(capsys, tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    for name in ("good", "broken"):
        NeuronSearch(**tiny(tiny_model_dir, results, run_id=name, iterations=0)).run(progress=False)
    (results / "broken" / "run.json").write_text("")
    code, out = cli(capsys, "--list", "--results-dir", str(results))
    assert code == 0 and "good" in out and "broken" in out and "damaged run.json" in out
    for command in (["--resume", "broken"], ["report", "broken"], ["explain", "broken"]):
        code, out = cli(capsys, *command, "--results-dir", str(results))
        assert code == 2 and "settings file" in out and "is damaged" in out and "records.sqlite" in out, (command, out)


# 5. A resume without a checkpoint -------------------------------------------------------------


def test_a_resume_without_a_checkpoint_keeps_every_measurement(tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    settings = tiny(tiny_model_dir, results, run_id="r", iterations=2)
    first = NeuronSearch(**settings).run(progress=False)
    stored_before = first.state["stats"]["measured"]
    (results / "r" / "checkpoints.sqlite").unlink()  # every Studio run has none
    second = NeuronSearch.resume("r", str(results), iterations=4, llm=settings["llm"]).run(progress=False)
    db = sqlite3.connect(results / "r" / "records.sqlite")
    stored = db.execute("SELECT COUNT(*) FROM records WHERE activation IS NOT NULL").fetchone()[0]
    iterations = [row[0] for row in db.execute("SELECT DISTINCT iteration FROM records ORDER BY iteration")]
    db.close()
    assert second.state["stats"]["measured"] == stored > stored_before
    assert second.state["iteration"] > first.state["iteration"]
    assert max(iterations) >= first.state["iteration"]  # continued after the stored iterations
    assert second.best[1] >= first.best[1]


def test_the_store_refuses_to_drop_a_measurement_under_a_used_key(tmp_path):
    from neuron_search.services.storage.record_store import RecordStore

    def measured(prompt: str) -> dict:
        return dict(prompt=prompt, activation=1.0, tokens=["a"], values=[1.0], error="", peak=0, xent=None)

    store = RecordStore(tmp_path / "records.sqlite")
    store.append(0, ["seed"], [measured("first")])
    store.append(0, ["seed"], [measured("first")])  # a replayed batch: nothing twice, nothing lost
    with pytest.raises(RuntimeError, match="refusing to drop"):
        store.append(0, ["seed"], [measured("another")])
    assert [r["prompt"] for r in store] == ["first"]
    store.close()


# 8. Check, then write --------------------------------------------------------------------------


def test_a_bad_neuron_or_layer_leaves_nothing_behind(capsys, tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    for option in (["--neuron", "999999"], ["--layer", "99"]):
        code, out = cli(capsys, "--model", str(tiny_model_dir), "--device", "cpu", "--llm", "embedded", *option,
                        "--results-dir", str(results), "--run-id", "typo", "--quiet")  # fmt: skip
        assert code == 2 and "Error:" in out, out
    code, out = cli(capsys, "sweep", "--model", str(tiny_model_dir), "--device", "cpu", "--layer", "99", "--neurons", "0:2",
                    "--results-dir", str(results), "--sweep-id", "typo-sweep", "--ray", "off", "--quiet")  # fmt: skip
    assert code == 2 and "Error:" in out, out
    assert not results.exists() or files_under(results) == set()


@pytest.mark.parametrize("option", ["--temperature", "--time-limit", "--min-improvement", "--target"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinite_options_are_refused_by_name(capsys, tmp_path, option, value):
    code, out = cli(capsys, f"{option}={value}", "--results-dir", str(tmp_path), "--quiet")
    assert code == 2 and f"{option} must be a finite number" in out, out
    assert list(tmp_path.iterdir()) == []


def test_sizes_are_bounded_and_a_huge_hint_file_is_refused(capsys, tmp_path):
    code, out = cli(capsys, "--top-k", "3000000000000000000", "--results-dir", str(tmp_path), "--quiet")
    assert code == 2 and "--top-k must be at most 1,000" in out, out
    for option, value in (("--batch-size", "100000"), ("--population", "100000"), ("--iterations", "10000000000")):
        code, out = cli(capsys, option, value, "--results-dir", str(tmp_path), "--quiet")
        assert code == 2 and f"{option} must be at most" in out, out
    hint = tmp_path / "hint.txt"
    hint.write_text("x" * (64 * 1024 + 1))
    code, out = cli(capsys, "--hint-file", str(hint), "--results-dir", str(tmp_path / "r"), "--quiet")
    assert code == 2 and "is over 64 KB" in out, out
    assert not (tmp_path / "r").exists()


# 9. Locks and read-only commands -----------------------------------------------------------------


def test_list_writes_nothing(capsys, finished, tmp_path):
    results = tmp_path / "results"
    (results / "only-settings").mkdir(parents=True)
    (results / "only-settings" / "run.json").write_text((finished / "done" / "run.json").read_text())
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    code, out = cli(capsys, "--list", "--results-dir", str(results))
    assert code == 0 and "only-settings" in out
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*")} == before


def test_report_and_explain_wait_for_a_run_that_is_in_use(capsys, finished):
    from neuron_search.services.storage.run_folder import run_lock

    with run_lock(finished / "done"):
        for command in (["report", "done"], ["explain", "done"]):
            code, out = cli(capsys, *command, "--results-dir", str(finished))
            assert code == 2 and "is being run right now" in out, out
    code, _ = cli(capsys, "report", "done", "--results-dir", str(finished))
    assert code == 0


def test_the_package_imports_without_fcntl():
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import neuron_search, run, graph.studio, services.storage.run_folder, services.model.bundled\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr

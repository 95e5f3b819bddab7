"""The command line: its subcommands, options and help (cli/), and end to end offline on the bundled model
and the embedded LLM; a few of its errors in a fresh interpreter (`python run.py`)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

from neuron_search import run
from neuron_search.cli import main as cli_main
from neuron_search.cli.main import COMMANDS, COMMON, help_text, parse
from neuron_search.cli.options import option_of, section_of, sections
from neuron_search.context import SearchContext
from neuron_search.services.llm import embedded_llm
from neuron_search.services.runtime import use_threads

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANGSMITH_TRACING": "false", "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_offline_search_on_the_bundled_model_and_embedded_llm(tmp_path, capsys, monkeypatch):
    # In this process, whose bundled Gemma (loaded once per test process) both commands reuse: the command line
    # end to end, offline. tests/test_readme.py runs the same search from a fresh interpreter.
    monkeypatch.setenv("COLUMNS", "160")
    code = run.main([
        "--model", "embedded", "--llm", "embedded", "--strategy", "llm", "--layer", "6", "--neuron", "123",
        "--iterations", "2", "--batch-size", "4", "--results-dir", str(tmp_path), "--quiet", "--no-explain",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Top 10 prompts" in out and "Bottom 10 prompts" in out and "Statistics" in out
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["settings"]["model"] == "embedded" and results["settings"]["neuron"] == 123
    assert results["best"]["activation"] == max(r["activation"] for r in results["top"])
    assert (run_dir / "report.html").stat().st_size > 1000
    assert (run_dir / "records.csv").read_text().count("\n") > 20
    assert str(run_dir) in out.replace("\n", "")
    assert results["explanation"] is None

    # Explained afterwards, offline, by the embedded LLM: the sentence, its scores and the control's; on the
    # threads asked for (torch's, and those of an embedded LLM loaded from then on), put back afterwards.
    try:
        code = run.main(["explain", run_dir.name, "--results-dir", str(tmp_path), "--threads", "1"])
        assert (torch.get_num_threads(), embedded_llm._thread_count()) == (1, 1)
    finally:
        use_threads(0)
    explained = capsys.readouterr().out
    assert code == 0, explained
    final = json.loads((run_dir / "results.json").read_text())["explanation"]
    assert final["explanation"] and final["llm"] == "embedded"
    assert not set(final["held_out"]["high"] + final["held_out"]["low"]) & set(final["shown"])
    assert set(final["scores"]) == {"explanation", "control"}
    assert "What the neuron detects" in explained and "What the neuron detects" in (run_dir / "report.html").read_text()


def test_help_explains_every_option(capsys, monkeypatch):
    # `run.py --help` is the map of the commands; `run.py search --help` has every search option.
    code, out = cli_help(capsys, monkeypatch, "search", "--help")
    assert code == 0
    for option in ("--neuron", "--layer", "--model", "--llm", "--iterations", "--device", "--position",
                   "--similarity-threshold", "--patience", "--min-improvement", "--target", "--time-limit",
                   "--seed-prompts", "--resume", "--list", "--hint", "--hint-file", "--temperature", "--top-k",
                   "--embedder", "--filter-buckets", "--bucket-percentiles", "--max-attempts", "--stats-every"):
        assert option in out, option


def test_a_neuron_the_model_does_not_have_is_a_clear_error(tmp_path, tiny_model_dir):
    done = run_cli("--model", str(tiny_model_dir), "--layer", "1", "--neuron", "999", "--llm", "embedded",
                   "--results-dir", str(tmp_path), "--quiet")
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert "256 neurons" in done.stdout and "--neuron" in done.stdout


def test_hint_and_hint_file_together_are_refused(tmp_path):
    result = run_cli("--hint", "numbers", "--hint-file", str(tmp_path / "hint.txt"), "--quiet")
    assert result.returncode == 2
    assert "--hint-file: not allowed with argument --hint" in result.stderr


# In this process: the subcommands, their options and their help -----------------------------------------


def cli_help(capsys, monkeypatch, *argv: str) -> tuple[int, str]:
    """`run.py ARGV` in this process on an 80-column terminal, for a command that prints and exits."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exited:
        run.main(list(argv))
    return exited.value.code, capsys.readouterr().out


def help_sections(text: str) -> dict[str, str]:
    """argparse's help, cut at its section headings ("What to search:") into heading -> the lines under it."""
    parts = re.split(r"^(\S[^\n]*):\n", text, flags=re.M)
    return {heading: body for heading, body in zip(parts[1::2], parts[2::2])}


def test_run_py_is_the_cli_and_the_console_command_too():
    assert run.main is cli_main.main
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["neuron-search"].split(":")
    assert module == "neuron_search.cli.main" and name == "main"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = {
        ".".join(("neuron_search", *init.parent.relative_to(ROOT).parts))
        for init in ROOT.glob("*/**/__init__.py")
        if init.relative_to(ROOT).parts[0] not in {"tests", "bench", "build", "results"}
    }
    assert set(packages) == folders | {"neuron_search"}  # every folder of the code ships, no other


def test_the_console_command_runs_from_any_folder(tmp_path):
    """`neuron-search` (installed by pip with the project) works outside the repository: `--help` and
    `list` over an empty results folder, started in a folder that holds nothing of the project."""
    # Where pip put it for this interpreter (a shim or an unactivated venv may keep it off PATH).
    command = shutil.which("neuron-search", path=sysconfig.get_path("scripts")) or shutil.which("neuron-search")
    assert command, "pip install -e . installs the neuron-search command (README's set-up line)"
    shown = subprocess.run([command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "search" in shown.stdout and "sweep" in shown.stdout, shown.stderr[-2000:]
    listed = subprocess.run([command, "list", "--results-dir", "runs-here"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]


def test_a_wheel_installs_one_namespaced_package_and_nothing_generic(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("neuron_search-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {"neuron_search", wheel.name.split("-py")[0] + ".dist-info"}
    for module in ("state.py", "context.py", "run.py", "api.py", "__init__.py", "graph/builder.py", "cli/main.py"):
        assert f"neuron_search/{module}" in names
    assert not [name for name in names if name.startswith(("neuron_search/tests/", "neuron_search/bench/"))]


def test_context_sections_cover_every_field_once_in_its_order():
    names = [f.name for f in dataclasses.fields(SearchContext)]
    assert [n for group in sections().values() for n in group] == names
    assert len(sections()) > 3 and "Other settings" not in sections()
    assert sections()["What to search"][:2] == ("neuron", "layer")
    assert section_of("population") == "The gradient search" and section_of("max_prompts") == "Stagnation and budgets"


def test_search_help_has_every_context_field_in_its_section(capsys, monkeypatch):
    code, out = cli_help(capsys, monkeypatch, "search", "--help")
    assert code == 0
    blocks = help_sections(out)
    assert list(blocks)[-len(sections()) - 1:-1] == list(sections())  # context.py's sections, in its order, then "This run"
    for f in dataclasses.fields(SearchContext):
        option = option_of(f.name)
        if option is None:  # high_percentile: set with low_percentile's --bucket-percentiles
            assert option_of("low_percentile") in blocks[section_of(f.name)]
            continue
        assert re.search(rf"^  {re.escape(option)}\b", blocks[section_of(f.name)], re.M), (f.name, option)
        first_words = " ".join(f.metadata["description"].split()[:4])
        if f.name not in ("seed_prompts", "builtin_seeds", "low_percentile"):  # options of their own words
            assert first_words in " ".join(blocks[section_of(f.name)].split()), f.name
    for option in ("--resume", "--list", "--stats-every", "--quiet"):
        assert option in blocks["This run"]
    assert " ".join(out.split()).count("cores / processes") == 1  # the whole description, not cut


def test_run_py_help_is_one_screen_that_maps_the_commands(capsys, monkeypatch):
    code, out = cli_help(capsys, monkeypatch, "--help")
    assert code == 0
    lines = out.rstrip("\n").splitlines()
    assert len(lines) <= 40, len(lines)
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    for name in COMMANDS:
        assert re.search(rf"^  {name} ", out, re.M), name
    assert "run.py search --help" in out
    search_options = help_text("search")
    for name, _, _ in COMMON:
        option = name if name.startswith("--") else option_of(name)
        assert option in out and option in search_options, option
    assert out == help_text()


def test_the_default_command_is_search():
    for argv in ([], ["--neuron", "840"], ["--resume", "some-run"], ["--list"], ["search", "--neuron", "840"]):
        assert parse(argv).command == "search", argv
    args = parse(["--neuron", "840", "--model", "embedded", "--max-prompts", "64", "--no-explain", "--quiet"])
    assert (args.neuron, args.model, args.max_prompts, args.explain, args.quiet) == (840, "embedded", 64, False, True)
    assert vars(args) == vars(parse(["search", "--neuron", "840", "--model", "embedded", "--max-prompts", "64", "--no-explain", "--quiet"]))
    unset = parse([])
    assert unset.neuron is None and unset.resume is None and not unset.list and unset.stats_every == 50
    assert parse(["--resume", "r1", "--iterations", "5"]).resume == "r1"
    assert parse(["--list", "--results-dir", "elsewhere"]).results_dir == "elsewhere"


def test_each_command_parses_its_options_as_before():
    report = parse(["report", "r1"])
    assert (report.command, report.run_id, report.results_dir) == ("report", "r1", SearchContext.results_dir)
    explain = parse(["explain", "r1", "--results-dir", "d", "--llm", "embedded", "--device", "cpu"])
    assert (explain.command, explain.run_id, explain.results_dir, explain.llm, explain.device) == ("explain", "r1", "d", "embedded", "cpu")
    assert parse(["explain", "r1"]).llm is None and parse(["explain", "r1"]).device is None  # the run's own
    assert parse(["explain", "r1"]).threads is None and parse(["explain", "r1", "--threads", "2"]).threads == 2
    ex = parse(["exemplars", "--neuron", "5", "--layer", "2", "--top-k", "7", "--max-snippets", "64", "--corpus", "c.txt"])
    assert (ex.command, ex.neuron, ex.layer, ex.top_k, ex.max_snippets, ex.corpus) == ("exemplars", 5, 2, 7, 64, "c.txt")
    defaults = parse(["exemplars"])
    assert (defaults.neuron, defaults.layer, defaults.model, defaults.top_k) == (SearchContext.neuron, SearchContext.layer, SearchContext.model, SearchContext.top_k)
    listed = parse(["list", "--results-dir", "d"])
    assert (listed.command, listed.results_dir) == ("list", "d")
    sweep = parse(["sweep", "--layer", "1", "--neurons", "0:4", "--ray", "off", "--workers", "3", "--no-shared",
                   "--shared-top", "5", "--sweep-id", "s", "--explain", "--max-prompts", "40", "--quiet"])
    assert (sweep.command, sweep.layer, sweep.neurons, sweep.ray, sweep.workers, sweep.shared, sweep.shared_top) == (
        "sweep", 1, "0:4", "off", 3, False, 5)
    assert (sweep.sweep_id, sweep.explain, sweep.max_prompts, sweep.quiet) == ("s", True, 40, True)
    resumed = parse(["sweep", "--resume", "s"])
    assert (resumed.resume, resumed.ray, resumed.workers, resumed.shared, resumed.explain) == ("s", "local", 2, None, None)
    for argv in (["sweep", "--run-id", "x"], ["report"], ["nonsense"]):
        with pytest.raises(SystemExit):
            parse(argv)


def test_every_command_has_its_help(capsys, monkeypatch):
    for name in COMMANDS:
        code, out = cli_help(capsys, monkeypatch, name, "--help")
        assert code == 0 and out.startswith(f"usage: run.py {'[search]' if name == 'search' else name}"), name


def test_sweep_help_groups_its_options_too():
    blocks = help_sections(help_text("sweep"))
    assert "--neurons" in blocks["The sweep"] and "--resume" in blocks["The sweep"]
    assert "--explain" in blocks["What the neuron detects"] and "off in a sweep" in " ".join(blocks["What the neuron detects"].split())
    assert "--max-prompts" in blocks["Stagnation and budgets"]
    assert "--neuron " not in help_text("sweep") and "--run-id" not in help_text("sweep")


def test_list_and_the_list_option_print_the_same_table(tmp_path, capsys):
    assert run.main(["list", "--results-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert run.main(["--list", "--results-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == listed and f"Runsin{tmp_path}/" in "".join(listed.split())


# runs/sweep_plan.py: which neurons a sweep searches, which are done, what a resume continues ------------


def test_a_new_sweep_plan():
    from neuron_search.runs import sweep_plan
    from neuron_search.services.errors import UserError

    with pytest.raises(UserError, match="--neurons SPEC"):
        sweep_plan.new_sweep_settings({}, None)
    with pytest.raises(UserError, match="--batch-size"):
        sweep_plan.new_sweep_settings({"batch_size": 0}, "0:4")
    layer, settings = sweep_plan.new_sweep_settings({"layer": 1, "max_prompts": 40}, "0:4")
    assert layer == 1 and settings == {"max_prompts": 40, "seed_prompts": (), "explain": False}
    plan = sweep_plan.new_plan("s", layer, settings, "0:8:2", width=16)
    assert (plan.sweep_id, plan.layer, plan.neurons, plan.shared, plan.shared_top) == ("s", 1, [0, 2, 4, 6], True, 20)
    assert plan.settings == {"max_prompts": 40, "seed_prompts": [], "explain": False}
    assert sweep_plan.new_plan("s", 1, settings, "all", width=3, shared=False, shared_top=5).neurons == [0, 1, 2]
    with pytest.raises(UserError, match="outside the layer"):
        sweep_plan.new_plan("s", 1, settings, "0:20", width=16)
    _, asked = sweep_plan.new_sweep_settings({"explain": True}, "0:4")
    assert asked["explain"] is True


def test_a_resumed_sweep_plan():
    from neuron_search.runs import sweep_plan
    from neuron_search.services.errors import UserError
    from neuron_search.services.storage.sweep_folder import SweepPlan

    stored = SweepPlan("s", 1, [0, 1, 2], {"model": "m", "position": "max", "max_prompts": 40}, shared=True, shared_top=5)
    with pytest.raises(UserError, match="leave --neurons out"):
        sweep_plan.check_resume("0:4")
    sweep_plan.check_resume(None)
    for name, value in (("model", "other"), ("layer", 2), ("position", "last")):
        with pytest.raises(UserError, match=f"own --{name}"):
            sweep_plan.resumed_plan(stored, {name: value})
    plan = sweep_plan.resumed_plan(stored, {"layer": 1, "model": "m", "max_prompts": 80}, shared=False)
    assert plan.settings == {"model": "m", "position": "max", "max_prompts": 80, "explain": False}
    assert (plan.neurons, plan.layer, plan.shared, plan.shared_top) == ([0, 1, 2], 1, False, 5)
    assert stored.settings == {"model": "m", "position": "max", "max_prompts": 40} and stored.shared  # not changed
    assert sweep_plan.resumed_plan(stored, {}).shared is True


def test_which_neurons_are_done_and_whether_to_resume():
    from neuron_search.runs import sweep_plan
    from neuron_search.services.storage.sweep_folder import NeuronStatus

    def status(neuron, state, best=1.0):
        return NeuronStatus(neuron, state, 1, None, best, "p", 8, 1.0, "boom" if state == "failed" else "")

    statuses = [status(0, "done"), status(1, "pending", None), status(2, "failed", None), status(3, "done")]
    assert sweep_plan.to_run(statuses) == [1, 2]
    tally = sweep_plan.tally(statuses, stopped=False)
    assert [s.neuron for s in tally.done] == [0, 3] and [s.neuron for s in tally.failed] == [2] and tally.unfinished
    assert not sweep_plan.tally([status(0, "done"), status(1, "done")], stopped=False).unfinished
    assert sweep_plan.tally([status(0, "done")], stopped=True).unfinished
    assert sweep_plan.tally([status(0, "done"), status(1, "failed", None)], stopped=False).unfinished
    assert sweep_plan.resume_command("s", SearchContext.results_dir) == "python run.py sweep --resume s"
    assert sweep_plan.resume_command("s", "/tmp/r") == "python run.py sweep --resume s --results-dir /tmp/r"

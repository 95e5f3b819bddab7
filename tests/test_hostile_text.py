"""Text from outside (prompts, tokens, explanations, paths, errors) is shown as it is and written whole.

Prompts that the search measures, and sentences an LLM writes, can hold anything: rich markup
(`[/url]`, `[bold]`, `[link=x]`), HTML, a `"`. The console shows them literally, the pages escape
them, and a write that fails half-way leaves the previous file, never half of a new one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from neuron_search.services.reports.display import RichProgress, SweepProgress, exemplars_table, records_table
from neuron_search.services.reports.explanation_view import explanation_table
from neuron_search.services.reports.result_files import write_results
from neuron_search.services.reports.results import print_summary
from neuron_search.services.storage.record_store import RecordStore, StoredRecord

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ["[/url] closes nothing", "[bold]loud[/bold] words", "[link=x]click[/link] here", "a lone [/] and a \\"]
EXPLANATION = "Fires on [bold] and [/url] and [link=x]markup[/link]"
CONTROL = "A generic [italic] sentence"


def console() -> Console:
    return Console(file=io.StringIO(), record=True, width=400, color_system=None, force_terminal=False)


def shown(c: Console) -> str:
    return c.export_text()


def stored(prompt: str, iteration: int = 1, slot: int = 0, activation: float = 1.0) -> StoredRecord:
    tokens = [prompt[: len(prompt) // 2], prompt[len(prompt) // 2 :]]
    return StoredRecord(iteration=iteration, slot=slot, source="llm", prompt=prompt, activation=activation,
                        token=tokens[1], tokens=tokens, values=[0.1, activation], error="")  # fmt: skip


def final_explanation() -> dict:
    detection = {"balanced_accuracy": 0.75, "n_high": 4, "n_low": 4, "n_answered": 8}
    generation = {"auroc": 0.8, "n_fire": 3, "n_not": 3, "ratio": 2.0}
    return {
        "explanation": EXPLANATION,
        "llm": "[red]custom:scripted",
        "shown": [], "held_out": {"high": [], "low": []}, "measured": 4,
        "scores": {
            "explanation": {"text": EXPLANATION, "detection": detection, "generation": generation},
            "control": {"text": CONTROL, "detection": detection, "generation": generation},
        },
    }  # fmt: skip


# ---- the console -------------------------------------------------------------------------------


def test_the_live_line_shows_the_best_prompt_literally():
    c = console()
    progress = RichProgress(console=c)
    stats = {"generated": 4, "accepted": 4}
    context = SimpleNamespace(iterations=3, explain=False)
    for i, prompt in enumerate([HOSTILE[1], HOSTILE[2], HOSTILE[0]], 1):
        progress.update({"iteration": i, "stats": stats, "best": {"prompt": prompt, "activation": float(i)}}, context)
    progress.close()  # the final refresh renders the line: a MarkupError here lost every results file
    assert repr(HOSTILE[0]) in shown(c)


def test_the_tables_show_prompts_tokens_and_explanations_literally():
    c = console()
    records = [{"prompt": p, "activation": 1.0, "token": p[:7], "source": "llm", "iteration": 1} for p in HOSTILE]
    c.print(records_table(records, "Top [/url] prompts"))
    c.print(explanation_table(final_explanation()))
    measurements = [
        {"prompt": p, "activation": 1.0, "tokens": [p[:7], p[7:]], "values": [0.5, 1.0], "peak": 0, "error": "", "xent": None}
        for p in HOSTILE
    ]
    c.print(exemplars_table(measurements, "Top 4 of 10 snippets: /data/[bold]corpus[/bold]"))
    text = shown(c)
    for p in HOSTILE:
        assert p in text and repr(p[:7]) in text
    assert "Top [/url] prompts" in text and "/data/[bold]corpus[/bold]" in text
    assert EXPLANATION in text and CONTROL in text


def test_the_final_summary_shows_prompts_explanation_and_stop_reason_literally(tmp_path):
    run_dir = tmp_path / "markup-run"
    store = RecordStore(run_dir / "records.sqlite")
    batch = [
        {"prompt": p, "activation": float(i), "tokens": [p], "values": [float(i)], "peak": 0, "error": "", "xent": None}
        for i, p in enumerate(HOSTILE)
    ]
    store.append(1, ["llm"] * len(batch), batch)
    store.close()
    records = [{"prompt": m["prompt"], "activation": m["activation"], "token": m["prompt"], "source": "llm", "iteration": 1} for m in batch]
    result = SimpleNamespace(
        context=SimpleNamespace(top_k=10, low_percentile=15.0, high_percentile=85.0),
        run_dir=run_dir,
        top=lambda k: records[::-1][:k],
        bottom=lambda k: records[:k],
        explanation=final_explanation(),
        state={"stats": {k: 1 for k in ("generated", "accepted", "rejected_similar", "rejected_duplicate", "rejected_empty",
                                           "measured", "failed", "llm_calls", "llm_errors", "llm_empty", "regenerations",
                                           "fallback_batches")}},  # fmt: skip
        stop_reason="the LLM said [/url]",
    )
    c = console()
    print_summary(result, c)
    text = shown(c)
    for p in HOSTILE:
        assert p in text
    assert EXPLANATION in text and "Stopped: the LLM said [/url]." in text


def status(neuron: int, best: float | None, prompt: str | None, state: str = "done", error: str = "") -> SimpleNamespace:
    return SimpleNamespace(neuron=neuron, status=state, attempts=1, worker=None, best=best, best_prompt=prompt,
                           measured=4, seconds=1.0, error=error)  # fmt: skip


def test_the_sweep_display_shows_prompts_and_errors_literally():
    from neuron_search.services.reports.display import error_text, top_neurons_table  # new: for run.py's sweep summary

    statuses = [status(0, 2.0, HOSTILE[0]), status(1, 1.0, HOSTILE[1]), status(2, None, None, "failed", "boom [/url]")]
    c = console()
    progress = SweepProgress(c)
    progress.update(statuses)
    progress.close()
    c.print(top_neurons_table(statuses, "sweep-[bold]"))
    c.print(error_text("Neuron 2 failed:", statuses[2].error))
    text = shown(c)
    assert "sweep-[bold]" in text and repr(HOSTILE[0]) in text and repr(HOSTILE[1]) in text
    assert "Neuron 2 failed: boom [/url]" in text


# ---- a search on the command line ------------------------------------------------------------


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "live"])
def test_a_search_whose_prompts_hold_markup_writes_and_prints_everything(tiny_model_dir, tmp_path, capsys, monkeypatch, quiet):
    """`python run.py` (in this process, so the scripted LLM can be registered) with and without
    --quiet: the LLM's prompts hold markup, are measured, shown literally, and every file is written."""
    from neuron_search import run
    from neuron_search.testing.helpers import scripted

    monkeypatch.setenv("COLUMNS", "300")
    answers = ["\n".join(f"{p} {i}" for p in HOSTILE) for i in range(50)]
    args = [
        "--model", str(tiny_model_dir), "--layer", "1", "--neuron", "3", "--device", "cpu",
        "--llm", scripted(answers), "--strategy", "llm", "--batch-size", "4", "--similarity-threshold", "0.99",
        "--max-attempts", "1", "--iterations", "2", "--no-explain", "--no-builtin-seeds", "--no-seed-corpus",
        "--results-dir", str(tmp_path), "--run-id", "markup", *(["--quiet"] if quiet else []),
    ]  # fmt: skip
    assert run.main(args) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "markup"
    for name in ("results.json", "records.csv", "report.html"):
        assert (run_dir / name).is_file(), name
    prompts = {r["prompt"] for r in json.loads((run_dir / "results.json").read_text())["top"]}
    assert any("[/url]" in p for p in prompts)
    for p in prompts:
        assert p in out  # the top table, literally


# ---- the pages ---------------------------------------------------------------------------------


def test_the_pages_escape_what_they_show(tmp_path):
    attack = '<img src=x onerror="alert(1)"> & "quoted"'
    settings = {"model": attack, "layer": 1, "neuron": 3, "llm": attack, "position": "max", "run_id": "r"}
    explanation = {"final": {**final_explanation(), "explanation": attack}, "hypotheses": [{"iteration": 1, "explanation": attack}]}
    paths = write_results(tmp_path / "r", settings, {"generated": 1, "accepted": 1}, [stored(attack)], explanation=explanation)
    page = paths["html"].read_text()
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_the_sweep_index_escapes_what_it_shows(tmp_path):
    from neuron_search.services.reports.sweep_index import render_index

    attack = '<img src=x onerror="alert(1)">'
    rows = [index_row(0, 1.0, attack, attack, error=attack)]
    page = render_index("s", 1, {"model": attack}, rows)
    assert "<img" not in page


def index_row(neuron: int, best: float | None, prompt: str, explanation: str = "", error: str = "") -> dict:
    return {
        "neuron": neuron, "status": "done" if best is not None else "failed", "best": best, "dataset_max": None,
        "ratio": None, "best_prompt": prompt, "best_record": None, "explanation": explanation, "detection": None,
        "generation_auroc": None, "control_auroc": None, "measured": 4, "seconds": 1.0, "attempts": 1,
        "report": "", "error": error,
    }  # fmt: skip


def test_the_sweep_index_page_survives_a_quote_in_its_address(tmp_path):
    """The fragment (#q=…&sort=…) is the page's input: a `"` in it must not stop the script."""
    from urllib.parse import quote

    from neuron_search.services.reports.sweep_index import render_index

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium and os.environ.get("NEURON_SEARCH_CI"):
        pytest.fail("CI must have Chromium (.ci/run installs Debian's chromium)")
    if not chromium:
        pytest.skip("needs Chromium (apt-get install chromium); CI installs it and runs this test")
    rows = [index_row(0, 1.0, 'say "hi"'), index_row(1, 3.0, "[/url] x"), index_row(2, 2.0, "plain")]
    page = tmp_path / "index.html"
    page.write_text(render_index("s", 1, {"model": "m"}, rows), encoding="utf-8")

    def dom(fragment: str) -> str:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}"]  # fmt: skip
        done = subprocess.run([chromium, *flags, "--dump-dom", page.resolve().as_uri() + fragment], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def order(text: str) -> list[int]:
        return [int(part.split('"')[0]) for part in text.split('data-neuron="')[1:]]

    broken = dom("#sort=" + quote('-best"]') + "&q=" + quote('"'))
    assert "1 of 3 neurons shown" in broken  # the filter ran; an unknown sort falls back to the neuron
    assert order(broken) == [0, 1, 2]
    ranked = dom("#sort=-best&q=" + quote('"hi"'))
    assert "1 of 3 neurons shown" in ranked
    assert "0 of 3 neurons shown" in dom("#q=%E0%A4%A&sort=best")  # a malformed escape is searched as typed
    assert order(dom("#sort=-best")) == [1, 2, 0]


# ---- files written whole -----------------------------------------------------------------------

SETTINGS = {"model": "m", "layer": 1, "neuron": 3, "llm": "x", "position": "max", "run_id": "r"}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_results_write_that_fails_half_way_keeps_the_previous_files(tmp_path):
    """A file-size limit (what a full disk looks like to the writer) stops the new results.json part
    of the way in: the previous results.json and report.html stay as they were, whole."""
    run_dir = tmp_path / "r"
    write_results(run_dir, SETTINGS, {"generated": 1}, [stored("old prompt")])
    before = {name: (run_dir / name).read_bytes() for name in ("results.json", "report.html")}
    # The new settings make results.json (and report.html) far larger than records.csv.
    limit = 20_000
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from neuron_search.services.reports.result_files import write_results
        from test_hostile_text import SETTINGS, stored
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        settings = {{**SETTINGS, "seed_prompts": ["x" * 100] * 400}}
        try:
            write_results(Path({str(run_dir)!r}), settings, {{"generated": 2}}, [stored("new prompt")])
        except OSError as error:
            print("failed:", error)
            sys.exit(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "new prompt" in (run_dir / "records.csv").read_text()  # the small file was written whole
    for name, content in before.items():
        assert (run_dir / name).read_bytes() == content, name
    assert leftovers(run_dir) == []


def fail_on_replace(monkeypatch):
    def refuse(source, target):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(os, "replace", refuse)


def test_records_csv_cut_short_by_an_error_keeps_the_previous_one(tmp_path):
    run_dir = tmp_path / "r"
    write_results(run_dir, SETTINGS, {"generated": 1}, [stored("old prompt")])
    before = (run_dir / "records.csv").read_bytes()

    def records():
        yield stored("new prompt", slot=0)
        raise OSError(5, "the record store went away (simulated)")

    with pytest.raises(OSError):
        write_results(run_dir, SETTINGS, {"generated": 2}, records())
    assert (run_dir / "records.csv").read_bytes() == before
    assert leftovers(run_dir) == []


def test_results_files_are_replaced_only_once_complete(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    write_results(run_dir, SETTINGS, {"generated": 1}, [stored("old prompt")])
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    fail_on_replace(monkeypatch)
    with pytest.raises(OSError):
        write_results(run_dir, SETTINGS, {"generated": 2}, [stored("new prompt")])
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_exemplars_explanation_and_sweep_index_are_replaced_only_once_complete(tmp_path, monkeypatch):
    from neuron_search.services.dataset.exemplars import Exemplars
    from neuron_search.services.reports.exemplars_page import write_exemplars
    from neuron_search.services.explain import run_explanation
    from neuron_search.services.reports import sweep_index

    measurement = {"prompt": "old", "activation": 1.0, "tokens": ["o", "ld"], "values": [0.1, 1.0], "peak": 1, "error": "", "xent": None}
    old = Exemplars("m", 1, 3, "corpus", 10, [measurement])
    paths = write_exemplars(old, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_explanation._write(run_dir, {"final": {"explanation": "old"}})
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    monkeypatch.setattr(sweep_index, "read_plan", lambda folder: SimpleNamespace(sweep_id="s", layer=1, settings={"model": "m"}))
    monkeypatch.setattr(sweep_index, "neuron_rows", lambda folder: [index_row(0, 1.0, "old")])
    index = sweep_index.write_index(sweep)
    folders = (paths["json"].parent, run_dir, sweep)
    before = {p: p.read_bytes() for folder in folders for p in folder.iterdir()}

    fail_on_replace(monkeypatch)
    new = Exemplars("m", 1, 3, "corpus", 10, [{**measurement, "prompt": "new"}])
    with pytest.raises(OSError):
        write_exemplars(new, tmp_path)
    with pytest.raises(OSError):
        run_explanation._write(run_dir, {"final": {"explanation": "new"}})
    monkeypatch.setattr(sweep_index, "neuron_rows", lambda folder: [index_row(0, 2.0, "new")])
    with pytest.raises(OSError):
        sweep_index.write_index(sweep)
    assert {p: p.read_bytes() for folder in folders for p in folder.iterdir()} == before
    assert set(index) == {"html", "csv"}


def test_the_bundled_model_module_imports_without_fcntl():
    """fcntl exists only on POSIX: the conversion lock is a filelock, so Windows can import the package."""
    code = "import sys; sys.modules['fcntl'] = None; import services.model.bundled"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]

"""Sweeps of a layer (run.py sweep): neurons as normal runs, shared measurements, Ray workers,
a lost worker, Ctrl-C and --resume, and the index page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from neuron_search import run
from neuron_search.services.errors import UserError
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.reports.sweep_index import write_index
from neuron_search.services.sweep.neuron_spec import parse_neurons
from neuron_search.services.storage.shared_tops import SharedTops
from neuron_search.services.storage.sweep_folder import StatusBook, sweep_dir

ROOT = Path(__file__).resolve().parent.parent
NEURONS = [0, 1, 2]
RUN_FILES = ("run.json", "records.sqlite", "checkpoints.sqlite", "results.json", "records.csv", "report.html")


def sweep_args(model_dir: Path, results: Path, sweep_id: str, *more: str, iterations: int = 3) -> list[str]:
    """A small gradient sweep of the tiny GPT-2: no LLM, so Ray's worker processes need nothing but the model."""
    return [
        "sweep", "--layer", "1", "--neurons", ",".join(map(str, NEURONS)), "--model", str(model_dir), "--device", "cpu",
        "--strategy", "gradient", "--population", "2", "--children", "2", "--batch-size", "4", "--no-seed-corpus",
        "--no-explain", "--iterations", str(iterations), "--results-dir", str(results), "--sweep-id", sweep_id, "--quiet", *more,
    ]  # fmt: skip


def statuses(folder: Path) -> dict[int, tuple]:
    book = StatusBook(folder)
    try:
        return {s.neuron: s for s in book.all()}
    finally:
        book.close()


def records(run_dir: Path) -> list[tuple]:
    db = sqlite3.connect(run_dir / "records.sqlite")
    try:
        return db.execute("SELECT iteration, slot, prompt, activation FROM records ORDER BY iteration, slot").fetchall()
    finally:
        db.close()


def best_prompts(folder: Path) -> dict[int, tuple[str, float]]:
    return {n: (s.best_prompt, round(s.best, 5)) for n, s in statuses(folder).items()}


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    from neuron_search.runs.ray_cluster import start_ray as _start_ray

    _start_ray("local", 2)  # as `--ray local` starts it: on 127.0.0.1 only
    yield ray
    ray.shutdown()


def test_neuron_specs():
    assert parse_neurons("0:6:2") == [0, 2, 4]
    assert parse_neurons("12, 840,12,1001") == [12, 840, 1001]
    assert parse_neurons("all", d_mlp=4) == [0, 1, 2, 3]
    for bad in ("", "a:b", "0:8:0", "all", "-1,3", "5:2"):
        with pytest.raises(UserError):
            parse_neurons(bad)
    with pytest.raises(UserError, match="0 to 3"):
        parse_neurons("2,4", d_mlp=4)


def test_the_shared_table_keeps_k_prompts_per_neuron_and_never_a_failed_one(tmp_path):
    import numpy as np

    table = SharedTops.create(tmp_path / "t.sqlite", [5, 7], k=2)
    table.record(["a", "b", "c"], np.array([[1.0, 0.1], [3.0, np.nan], [2.0, 0.3]], dtype=np.float32), found_for=5)
    table.record(["d"], np.array([[2.5, 0.2]], dtype=np.float32), found_for=7)
    assert [(r.prompt, r.activation, r.found_for) for r in table.top(5)] == [("b", 3.0, 5), ("d", 2.5, 7)]
    assert [r.prompt for r in table.top(7)] == ["c", "d"]  # b's NaN is never kept
    table.close()


def test_a_prompt_measured_for_one_neuron_enters_another_neurons_table_when_it_excites_it(tiny_model_dir, tmp_path):
    from neuron_search.services.search.seeds import BUILTIN_SEEDS

    assert run.main(sweep_args(tiny_model_dir, tmp_path, "shared", "--ray", "off", "--shared-top", "5")) == 0
    folder = sweep_dir(tmp_path, "shared")
    table = SharedTops(folder / "sweep.sqlite")
    subject = SubjectModel.load(str(tiny_model_dir), "cpu")
    measured_for = {n: {p for _, _, p, a in records(folder / "neurons" / str(n)) if a is not None} for n in NEURONS}
    everything = sorted(set().union(*measured_for.values()))
    crossed = 0
    for neuron in NEURONS:
        rows = table.top(neuron)
        assert len(rows) == 5
        measured = subject.measure([row.prompt for row in rows], 1, neuron)
        assert [m["activation"] for m in measured] == pytest.approx([row.activation for row in rows], abs=1e-5)
        # The table holds the top 5 of every prompt the sweep measured, whichever neuron it was measured for.
        best = sorted(m["activation"] for m in subject.measure(everything, 1, neuron))[-5:]
        assert sorted(row.activation for row in rows) == pytest.approx(best, abs=1e-5)
        crossed += sum(row.found_for != neuron for row in rows)
        assert all(row.prompt in measured_for[row.found_for] for row in rows)
    assert crossed, "no neuron's table holds a prompt measured for another neuron"
    # Neuron 2 runs last, and its search starts from what neurons 0 and 1 found that excites it.
    seeds_of_2 = {p for i, _, p, _ in records(folder / "neurons" / "2") if i == 0}
    from_others = seeds_of_2 - set(BUILTIN_SEEDS)
    assert from_others and from_others <= measured_for[0] | measured_for[1]
    table.close()


def test_a_sweep_on_two_ray_workers_finds_what_one_process_finds(tiny_model_dir, tmp_path, ray_instance):
    assert run.main(sweep_args(tiny_model_dir, tmp_path, "plain", "--ray", "off", "--no-shared")) == 0
    assert run.main(sweep_args(tiny_model_dir, tmp_path, "on-ray", "--ray", "local", "--workers", "2", "--no-shared")) == 0
    plain, on_ray = sweep_dir(tmp_path, "plain"), sweep_dir(tmp_path, "on-ray")
    for n in NEURONS:
        for name in RUN_FILES:
            assert (on_ray / "neurons" / str(n) / name).is_file(), f"neuron {n} has no {name}"
    assert {s.status for s in statuses(on_ray).values()} == {"done"}
    assert len({s.worker for s in statuses(on_ray).values()}) == 2  # both workers ran neurons
    assert os.getpid() not in {s.worker for s in statuses(on_ray).values()}
    assert best_prompts(on_ray) == best_prompts(plain)
    for name in ("index.html", "index.csv"):
        assert (on_ray / name).is_file()


def signal_a_worker_mid_neuron(folder: Path, sig: int, seen: dict) -> None:
    """Wait (at most 300 s) until a running neuron of the sweep in `folder` has saved its seeds and two
    batches, then send its worker `sig`; `seen` gets the neuron, the worker's pid and the rows saved."""
    deadline = time.time() + 300
    while time.time() < deadline and "pid" not in seen:
        time.sleep(0.05)
        if not (folder / "sweep.sqlite").is_file():
            continue
        for s in statuses(folder).values():
            run_dir = folder / "neurons" / str(s.neuron)
            if s.status != "running" or not (run_dir / "records.sqlite").is_file():
                continue
            try:
                rows = records(run_dir)
            except sqlite3.Error:
                continue
            if any(i >= 2 for i, *_ in rows):  # seeds and two batches saved: mid-neuron
                seen.update(neuron=s.neuron, pid=s.worker, rows=rows)
                os.kill(s.worker, sig)
                return


def test_a_worker_killed_mid_neuron_costs_only_its_batch_in_flight(tiny_model_dir, tmp_path, ray_instance):
    folder = sweep_dir(tmp_path, "killed")
    seen: dict = {}

    killer = threading.Thread(target=signal_a_worker_mid_neuron, args=(folder, signal.SIGKILL, seen))
    killer.start()
    code = run.main(sweep_args(tiny_model_dir, tmp_path, "killed", "--ray", "local", "--workers", "2", iterations=8))
    killer.join()
    assert code == 0 and "pid" in seen, "no worker was killed mid-neuron"
    final = statuses(folder)
    assert {s.status for s in final.values()} == {"done"}  # none lost
    assert final[seen["neuron"]].attempts == 2  # resumed once, elsewhere
    assert final[seen["neuron"]].worker != seen["pid"]
    assert [s.attempts for n, s in final.items() if n != seen["neuron"]] == [1, 1]  # none run twice
    after = records(folder / "neurons" / str(seen["neuron"]))
    assert set(seen["rows"]) <= set(after)  # what was saved before the kill is kept ...
    seeds = [p for i, _, p, _ in after if i == 0]
    assert len(seeds) == len(set(seeds))  # ... and the run went on from its checkpoint, not from its start
    iterations = sorted({i for i, *_ in after})
    others = {max(i for i, *_ in records(folder / "neurons" / str(n))) for n in NEURONS if n != seen["neuron"]}
    assert iterations == list(range(iterations[-1] + 1)) and others == {iterations[-1]}  # its whole budget, once


def test_resume_after_ctrl_c_skips_the_done_neurons(tiny_model_dir, tmp_path):
    folder = sweep_dir(tmp_path, "stopped")
    command = [sys.executable, str(ROOT / "run.py"), *sweep_args(tiny_model_dir, tmp_path, "stopped", "--ray", "off", iterations=6)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
        if (folder / "sweep.sqlite").is_file() and any(s.status == "done" for s in statuses(folder).values()):
            process.send_signal(signal.SIGINT)
            break
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    assert "--resume stopped" in " ".join(out.split())
    first = statuses(folder)
    done = [n for n, s in first.items() if s.status == "done"]
    assert done and len(done) < len(NEURONS), first
    kept = {n: records(folder / "neurons" / str(n)) for n in done}

    assert run.main(["sweep", "--resume", "stopped", "--results-dir", str(tmp_path), "--ray", "off", "--quiet"]) == 0
    final = statuses(folder)
    assert {s.status for s in final.values()} == {"done"}
    for n in done:
        assert final[n].attempts == 1  # skipped: not started again
        assert records(folder / "neurons" / str(n)) == kept[n]


def test_the_index_page_renders_every_neuron_in_headless_chromium(tiny_model_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium and os.environ.get("NEURON_SEARCH_CI"):
        pytest.fail("CI must have Chromium (.ci/run installs Debian's chromium)")
    if not chromium:
        pytest.skip("needs Chromium (apt-get install chromium); CI installs it and runs this test")
    assert run.main(sweep_args(tiny_model_dir, tmp_path, "index", "--ray", "off", iterations=1)) == 0
    folder = sweep_dir(tmp_path, "index")
    paths = write_index(folder)
    best = statuses(folder)[1].best_prompt

    def dom(fragment: str) -> str:
        url = paths["html"].resolve().as_uri() + fragment
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}"]  # fmt: skip
        done = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    page = dom("")
    for n in NEURONS:
        assert f'data-neuron="{n}"' in page
    assert f"{len(NEURONS)} of {len(NEURONS)} neurons shown" in page  # written by the page's script
    words = [w for w in best.split() if all(w.lower() not in (statuses(folder)[n].best_prompt or "").lower() for n in (0, 2))]
    if words:  # a word only neuron 1's best prompt has: the filter shows its row alone
        from urllib.parse import quote

        filtered = dom("#q=" + quote(words[0]))
        assert f"1 of {len(NEURONS)} neurons shown" in filtered
    ranked = dom("#sort=-best")
    order = [int(part.split('"')[0]) for part in ranked.split('data-neuron="')[1:]]
    expected = sorted(NEURONS, key=lambda n: -statuses(folder)[n].best)
    assert order == expected
    csv_lines = paths["csv"].read_text().splitlines()
    assert len(csv_lines) == len(NEURONS) + 1 and csv_lines[0].startswith("neuron,status,best")

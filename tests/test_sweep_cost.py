"""Sweeps that pay only for their size (issue #33 items 4 and 5): a sweep scans its layer's corpus once,
not once per worker; --threads sets torch's thread count in the search process; a sweep explains its
neurons only when asked, and then says what that costs.

The scan test gives every process of the sweep (this one and each Ray worker, through Ray's
worker_process_setup_hook) a small corpus, a scan that takes a few seconds as a real one takes minutes
(so two workers that both scan overlap, as they did on the bundled model), and a log line per scan
written to the cache: the number of lines is the number of scans, whichever process made them."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from neuron_search import run
from neuron_search.cli.main import help_text
from neuron_search.services.storage.sweep_folder import sweep_dir
from test_sweep import records, statuses

ROOT = Path(__file__).resolve().parent.parent
SCAN_LOG = "NEURON_SEARCH_TEST_SCAN_LOG"  # one line "scan PID" per scan written to the cache
THREADS_LOG = "NEURON_SEARCH_TEST_THREADS_LOG"  # one line "PID THREADS" per measurement batch
SMALL_CORPUS = "NEURON_SEARCH_TEST_CORPUS"
SCAN_BATCH_SECONDS = 1.5  # each batch of the scan takes this much longer: a scan lasts several seconds


def _patches() -> list[tuple[object, str, object]]:
    """What every process of the scan test runs with: the small corpus as the default one, a slow scan,
    and logs of scans and of torch's thread count."""
    import torch

    import neuron_search.services.dataset.exemplars as exemplars_module
    from neuron_search.services.dataset.corpus import corpus_source
    from neuron_search.services.model.subject_model import SubjectModel

    write_scan, layer_maxima, measure = exemplars_module._write_scan, SubjectModel.layer_maxima, SubjectModel.measure

    def small_corpus_source(path=None):
        return corpus_source(os.environ[SMALL_CORPUS] if path is None else path)

    def logged_write_scan(*args, **kwargs):
        with open(os.environ[SCAN_LOG], "a") as log:
            log.write(f"scan {os.getpid()}\n")
        return write_scan(*args, **kwargs)

    def slow_layer_maxima(self, *args, **kwargs):
        time.sleep(SCAN_BATCH_SECONDS)
        return layer_maxima(self, *args, **kwargs)

    def logged_measure(self, *args, **kwargs):
        with open(os.environ[THREADS_LOG], "a") as log:
            log.write(f"{os.getpid()} {torch.get_num_threads()}\n")
        return measure(self, *args, **kwargs)

    return [
        (exemplars_module, "corpus_source", small_corpus_source),
        (exemplars_module, "_write_scan", logged_write_scan),
        (SubjectModel, "layer_maxima", slow_layer_maxima),
        (SubjectModel, "measure", logged_measure),
    ]


def _patch_this_worker() -> None:
    """Ray's worker_process_setup_hook: each worker process of the test's Ray runs with the patches."""
    for owner, name, value in _patches():
        setattr(owner, name, value)


@pytest.fixture
def scan_test_ray(tmp_path, monkeypatch):
    """Ray as `--ray local` starts it (loopback only, 2 CPUs), with the test's patches in every worker and
    in this process, and its own cache, corpus and logs."""
    import ray

    from neuron_search.runs import ray_cluster

    words = "alpha beta gamma delta river stone cloud seven ninety copper violet engine ledger orbit".split()
    corpus = tmp_path / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n\n".join(" ".join(rng.choices(words, k=rng.randint(4, 30))) for _ in range(120)), encoding="utf-8")
    env = {
        "NEURON_SEARCH_CACHE": str(tmp_path / "cache"),
        SCAN_LOG: str(tmp_path / "scans.log"),
        THREADS_LOG: str(tmp_path / "threads.log"),
        SMALL_CORPUS: str(corpus),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for owner, name, value in _patches():
        monkeypatch.setattr(owner, name, value)
    if ray.is_initialized():
        ray.shutdown()
    with ray_cluster._loopback_only():
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
            _temp_dir=ray_cluster._ray_temp_dir(),
            # The workers import this module (the hook is pickled by reference) from the tests folder.
            runtime_env={"env_vars": {**env, "PYTHONPATH": str(ROOT / "tests")},
                         "worker_process_setup_hook": _patch_this_worker},
        )  # fmt: skip
    yield tmp_path
    ray.shutdown()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def test_a_sweep_on_two_ray_workers_scans_the_layers_corpus_once(tiny_model_dir, scan_test_ray):
    tmp_path = scan_test_ray
    argv = [
        "sweep", "--layer", "1", "--neurons", "0,1", "--model", str(tiny_model_dir), "--device", "cpu",
        "--strategy", "gradient", "--population", "2", "--children", "2", "--batch-size", "4", "--top-k", "3",
        "--seed-corpus", "--no-explain", "--iterations", "2", "--results-dir", str(tmp_path / "results"),
        "--sweep-id", "scan-once", "--quiet", "--ray", "local", "--workers", "2",
    ]  # fmt: skip
    assert run.main(argv) == 0
    folder = sweep_dir(tmp_path / "results", "scan-once")
    final = statuses(folder)
    assert {s.status for s in final.values()} == {"done"}
    workers = {s.worker for s in final.values()}
    assert len(workers) == 2 and os.getpid() not in workers  # two workers ran the two neurons
    scans = _lines(tmp_path / "scans.log")
    assert len(scans) == 1, f"{len(scans)} scans of layer 1's corpus: {scans}"
    assert scans == [f"scan {os.getpid()}"]  # made by the sweep, before its workers started
    corpus = (tmp_path / "corpus.txt").read_text()
    for n in final:  # ... and each neuron's search was seeded from it
        seeds = {p for i, _, p, _ in records(folder / "neurons" / str(n)) if i == 0}
        assert any(" ".join(p.split()) in " ".join(corpus.split()) for p in seeds - {""}), seeds
    # Each worker ran torch on its share of the cores.
    used = {int(pid): int(threads) for pid, threads in (line.split() for line in _lines(tmp_path / "threads.log"))}
    assert {used[w] for w in workers} == {max(1, len(os.sched_getaffinity(0)) // 2)}


def test_threads_sets_torchs_thread_count_in_the_search_process(tiny_model_dir, tmp_path):
    import torch

    before = torch.get_num_threads()
    wanted = before + 1  # not what torch uses by itself
    argv = [
        "--layer", "1", "--neuron", "3", "--model", str(tiny_model_dir), "--device", "cpu", "--strategy", "gradient",
        "--population", "2", "--children", "2", "--batch-size", "4", "--no-seed-corpus", "--no-explain",
        "--iterations", "1", "--results-dir", str(tmp_path), "--quiet", "--stats-every", "0",
    ]  # fmt: skip
    try:
        assert run.main([*argv, "--threads", str(wanted), "--run-id", "threads"]) == 0
        assert torch.get_num_threads() == wanted
        assert run.main([*argv, "--run-id", "default"]) == 0  # 0, the default: torch's own count again
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
    assert "cores / processes" in " ".join(help_text("search").split())  # --help says what to give


def test_a_sweep_explains_its_neurons_only_when_asked_and_then_says_what_it_costs(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import importlib

    explain_node = importlib.import_module("neuron_search.nodes.explain")  # the module (nodes exports its function by that name)
    explained: list[str] = []

    def fake_explain_run(run_dir, llm_spec, measure, seed=0, real_text=None):
        explained.append(Path(run_dir).name)
        return {"explanation": "", "scores": None}

    monkeypatch.setattr(explain_node, "explain_run", fake_explain_run)
    argv = [
        "sweep", "--layer", "1", "--neurons", "0,1", "--model", str(tiny_model_dir), "--device", "cpu",
        "--strategy", "gradient", "--population", "2", "--children", "2", "--batch-size", "4", "--no-seed-corpus",
        "--iterations", "1", "--results-dir", str(tmp_path), "--quiet", "--ray", "off",
    ]  # fmt: skip
    assert run.main([*argv, "--sweep-id", "plain"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert explained == []  # the default: no explanation
    assert "LLM calls a neuron" not in out
    assert {s.status for s in statuses(sweep_dir(tmp_path, "plain")).values()} == {"done"}

    assert run.main([*argv, "--sweep-id", "explained", "--explain"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert sorted(explained) == ["0", "1"]  # --explain still explains every neuron
    assert "Explaining each neuron: about 21 LLM calls a neuron" in out, out  # its cost, said once
    assert out.count("LLM calls a neuron") == 1
    from neuron_search.runs.sweep_scheduler import explanation_calls

    # At --max-prompts 40 an explanation holds out 10 + 10 prompts: 1 + 2 x (4 + 2) calls, as measured on the bundled model.
    assert explanation_calls({"max_prompts": 40}) == (13, 21)


def test_two_callers_that_find_no_scan_make_one_and_the_second_reads_it(tiny_model_dir, tmp_path, monkeypatch):
    """The cache's file lock: a second process (here a thread, which holds its own lock file handle as
    a process does) that asks for a layer being scanned waits for that scan instead of making its own."""
    import threading

    import neuron_search.services.dataset.exemplars as exemplars_module
    from neuron_search.services.dataset.corpus import corpus_source
    from neuron_search.services.model.subject_model import SubjectModel

    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"paragraph {i} of the small corpus, about stones and rivers" for i in range(40)), encoding="utf-8")
    made: list[int] = []
    write_scan, layer_maxima = exemplars_module._write_scan, SubjectModel.layer_maxima
    monkeypatch.setattr(exemplars_module, "_write_scan", lambda *a, **k: made.append(1) or write_scan(*a, **k))
    monkeypatch.setattr(SubjectModel, "layer_maxima", lambda self, *a, **k: time.sleep(SCAN_BATCH_SECONDS) or layer_maxima(self, *a, **k))
    subject = SubjectModel.load(str(tiny_model_dir), "cpu")
    results: list = []
    callers = [
        threading.Thread(target=lambda: results.append(exemplars_module.layer_scan(subject, 1, corpus_source(corpus), 0)))
        for _ in range(2)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(made) == 1  # one scan ...
    assert len(results) == 2 and results[0][0] == results[1][0]  # ... which both callers got
    assert (results[0][1] == results[1][1]).all()

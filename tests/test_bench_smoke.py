"""The benchmarks keep working: each runs with --smoke (tiny sizes, the tiny model, a scripted LLM).

They are not part of what the suite measures; this checks that each exits cleanly, prints its
markdown table, and that a number of its first row (SCRIPTS names the column) is finite and in range.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Each script, the column of its table's first row that must hold a number, and the range that number
# must lie in (prompts a second, seconds, MiB, activations of the tiny model, ...).
POSITIVE = 1e-9
SCRIPTS = {
    "filter_scaling.py": ("this index (ms/candidate)", POSITIVE, 1e4),
    "measurement_throughput.py": ("HF forward (b)", POSITIVE, 1e6),  # prompts a second
    "memory.py": ("RSS (MiB)", 10, 1e6),
    "end_to_end.py": ("prompts / minute", POSITIVE, 1e6),
    "search_quality.py": ("tool: best", -1e3, 1e3),  # an activation
    "filter_value.py": ("best activation", -1e3, 1e3),
    "resume_time.py": ("open the run's services (s)", 0, 600),
    "concurrency.py": ("prompts/s", POSITIVE, 1e6),
    "gradient_quality.py": ("best @", -1e3, 1e3),
    "structured_output.py": ("usable prompts a call (mean)", 0, 100),
    "explanation_quality.py": ("LLM s", 0, 3600),
    "fluency_cost.py": ("prompts/s", POSITIVE, 1e6),
    "sweep_throughput.py": ("neurons / hour", POSITIVE, 1e7),
    "llm_speed.py": ("tokens / s (median)", POSITIVE, 1e5),
    "hypothesis_steering.py": ("best off", -1e3, 1e3),
}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def offline_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANGSMITH_TRACING": "false", "TMPDIR": str(tmp_path)}


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def printed_number(table: list[str], column: str) -> float:
    """The first number in `column` of the table's first row (thousands separators dropped)."""
    header, row = cells(table[0]), cells(table[2])
    index = next((i for i, name in enumerate(header) if column in name), None)
    assert index is not None and index < len(row), f"no column {column!r} in {table[0]!r} / {table[2]!r}"
    found = NUMBER.search(row[index].replace(",", ""))
    assert found, f"no number in {column!r}: {row[index]!r}"
    return float(found.group())


def run_script(path: Path, args: list[str], tmp_path: Path, capsys, monkeypatch) -> str:
    """`python PATH ARGS` in this process, as a fresh interpreter would run it (its own __main__, argv,
    working folder and temporary folder), and what it printed; a fresh interpreter per script cost 5-8 s
    of imports each. Its torch thread count is put back afterwards, for the tests that run after it here."""
    import runpy
    import tempfile

    import torch

    threads = torch.get_num_threads()
    for name, value in offline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    monkeypatch.chdir(tmp_path)
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exited:
        captured = capsys.readouterr()
        assert exited.code in (0, None), captured.out[-2000:] + captured.err[-3000:]
        return captured.out
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_smoke(script: str, tmp_path: Path, capsys, monkeypatch) -> None:
    out = run_script(BENCH / script, ["--smoke"], tmp_path, capsys, monkeypatch)
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) >= 3, out  # a header, its rule, and at least one row
    assert set(table[1]) <= set("|-: ")
    column, low, high = SCRIPTS[script]
    value = printed_number(table, column)
    assert math.isfinite(value) and low <= value <= high, f"{column}: {value} not in [{low}, {high}]\n{out}"


def test_gradient_quality_without_the_peers_readable_point_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    """--no-peer-readable: the peer's best and its cross-entropy are printed, its readable point is not
    (not computed, rather than a number from the few cross-entropies it has)."""
    out = run_script(BENCH / "gradient_quality.py", ["--smoke", "--methods", "gcg", "--no-peer-readable"], tmp_path, capsys, monkeypatch)
    table = [line for line in out.splitlines() if line.startswith("|")]
    header, row = cells(table[0]), cells(table[2])
    assert row[header.index("best readable @120 (x dataset)")] == "not computed"
    assert NUMBER.fullmatch(row[header.index("xent of best @120")])
    assert "readable prompts not computed (--no-peer-readable)" in out and "a readable prompt beats" not in out


def test_gpu_check_runs_against_the_cpu_where_there_is_no_gpu(tmp_path: Path, capsys, monkeypatch) -> None:
    """scripts/gpu_check.py is only run for real on a GPU machine; here it compares the CPU with itself."""
    args = ["--device", "cpu", "--prompts", "8", "--iterations", "3", "--folder", str(tmp_path),
            "--sweep-neurons", "2", "--sweep-prompts", "24", "--width", "128"]  # fmt: skip
    out = run_script(BENCH.parent / "scripts" / "gpu_check.py", args, tmp_path, capsys, monkeypatch)
    assert "agreement: OK" in out and "GPU CHECK PASSED" in out
    assert "search on cpu: 3 iterations" in out
    assert "sweep on cpu: 2 neurons x 24 prompts" in out and "neurons/hour (OK)" in out


def records_folder(tmp_path: Path, rows: list[dict]) -> Path:
    """A run folder whose records.csv holds `rows`."""
    import csv

    folder = tmp_path / "run"
    folder.mkdir()
    with open(folder / "records.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_swap_positions_counts_the_leads_one_swap_children_by_distance_before_the_peak(tmp_path):
    """bench/swap_positions.py: a child is one token changed at or before the best earlier prompt's peak;
    edits, two-token changes and swaps after the peak are left out."""
    import json

    def row(iteration: int, slot: int, tokens: list[str], values: list[float]) -> dict:
        return {"iteration": iteration, "slot": slot, "source": "gradient", "prompt": "".join(tokens), "activation": max(values),
                "token": "", "error": "", "xent": "", "tokens": json.dumps(tokens), "values": json.dumps(values)}  # fmt: skip

    parent = ["a", "b", "c", "d", "e"]  # peak at "d" (index 3)
    rows = [
        row(0, 0, parent, [0, 0, 0, 1.0, 0]),
        row(1, 0, ["a", "b", "c", "X", "e"], [0, 0, 0, 0.5, 0]),  # the peak token: 0 before it, no rise
        row(1, 1, ["a", "b", "X", "d", "e"], [0, 0, 0, 2.0, 0]),  # 1 before: a rise of 1.0
        row(1, 2, ["X", "b", "c", "d", "e"], [0, 0, 0, 1.5, 0]),  # 3 before: a rise of 0.5
        row(1, 3, ["a", "b", "c", "d", "X"], [0, 0, 0, 3.0, 0]),  # after the peak: left out
        row(1, 4, ["a", "b", "c", "d"], [0, 0, 0, 3.0]),  # an edit: left out
        row(1, 5, ["X", "X", "c", "d", "e"], [0, 0, 0, 3.0, 0]),  # two changes: left out
        row(2, 0, ["a", "b", "c", "X", "e"], [0, 0, 0, 3.5, 0]),  # its parent is now slot 3's prompt (the first at 3.0): two changes
    ]
    folder = records_folder(tmp_path, rows)
    from swap_positions import count  # bench/ is on the tests' path (pyproject.toml's pythonpath)

    counts = count(folder)
    assert dict(counts) == {0: [1, 0, 0.0], 1: [1, 1, 1.0], 2: [1, 1, 0.5]}
    done = subprocess.run([sys.executable, str(BENCH / "swap_positions.py"), str(folder)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| 2-3 | 1 | 33% | 1 | 100.0% | 0.5000 |" in done.stdout and "all: 2 of 3 rose" in done.stdout


def test_swap_positions_sets_apart_children_that_re_apply_the_last_iterations_winners(tmp_path):
    """bench/swap_positions.py's second table: a child of the new lead whose every change is a swap that beat
    the previous lead the iteration before is counted by how many it re-applies; other one-swap children are fresh."""
    import json

    def row(iteration: int, tokens: list[str], activation: float) -> dict:
        return {"iteration": iteration, "slot": 0, "source": "gradient", "prompt": "".join(tokens), "activation": activation,
                "token": "", "error": "", "xent": "", "tokens": json.dumps(tokens), "values": json.dumps([activation] * len(tokens))}  # fmt: skip

    rows = [
        row(0, ["a", "b", "c", "d"], 1.0),
        row(1, ["X", "b", "c", "d"], 3.0),  # a winner: the new lead
        row(1, ["a", "b", "Y", "d"], 2.0),  # a winner
        row(1, ["a", "Z", "c", "d"], 0.5),  # fell short: not a winner
        row(2, ["X", "b", "Y", "d"], 3.5),  # re-applies Y: rose, and won the iteration
        row(2, ["X", "Z", "c", "d"], 3.2),  # Z did not win before: fresh, rose
        row(2, ["X", "b", "c", "W"], 2.0),  # fresh, fell short
        row(2, ["X", "Z", "Y", "d"], 9.0),  # a winner's swap and a fresh one: left out
    ]
    folder = records_folder(tmp_path, rows)
    from swap_positions import restacked

    # Iteration 1's three are fresh children of the first lead (two rose, one won); iteration 2's as above.
    assert dict(restacked(folder)) == {0: [5, 3, 1], 1: [1, 1, 0]}


def test_swap_positions_ranks_a_childs_token_by_the_parents_gradient(tmp_path, tiny_model_dir):
    """bench/swap_positions.py --ranks: a one-swap child's token is put in the bucket of its rank among the top 64
    tokens the activation's gradient gives the parent at that position (64 and beyond: not among them)."""
    import json

    from neuron_search.services.model.subject_model import SubjectModel
    from neuron_search.services.search.candidates import allowed_tokens, member_swaps, retokenizes
    from swap_positions import ranks

    tiny = SubjectModel.load(str(tiny_model_dir), "cpu")
    parent = tiny.token_ids("The quick brown fox jumps over the lazy dog")
    (ranked,) = member_swaps(tiny, [(parent, 0.0)], 1, 3, "max", allowed_tokens(tiny, True), 64)
    order = [t for t in ranked.tokens[2].tolist() if t != parent[2]]

    def child(rank_from: int, rank_to: int | None) -> list[int]:
        pool = order[rank_from:rank_to] if rank_to is not None else [t for t in range(200, 5000) if t not in order[:64] and t != parent[2]]
        return next(row for t in pool if retokenizes(tiny, row := parent[:2] + [t] + parent[3:]))

    def row(iteration: int, ids: list[int], activation: float) -> dict:
        return {"iteration": iteration, "slot": 0, "source": "gradient", "prompt": tiny.decode(ids), "activation": activation,
                "token": "", "error": "", "xent": "", "tokens": "[]", "values": json.dumps([activation])}  # fmt: skip

    rows = [row(0, parent, 1.0), row(1, child(0, 8), 2.0), row(1, child(16, 32), 0.5), row(1, child(64, None), 1.5)]
    folder = records_folder(tmp_path, rows)
    assert dict(ranks(folder, tiny, 1, 3)) == {0: [1, 1, 1.0], 2: [1, 0, 0.0], 4: [1, 1, 0.5]}


def test_swap_distance_draws_each_rules_swaps_and_takes_the_expected_best_of_a_batch(tiny_model_dir):
    """bench/swap_distance.py: every rule's swaps sit at or before the peak, never keep the parent's token, and
    are among that position's top 64 (16) allowed tokens by the rule's score; with a large weight on distance
    those are the allowed tokens nearest the parent's. The lead's step is the exact expected max(0, best rise)
    of a batch drawn without replacement."""
    import torch

    from neuron_search.services.model.gradient import embedding_matrix, token_gradients
    from neuron_search.services.model.subject_model import SubjectModel
    from neuron_search.services.search.candidates import allowed_tokens
    from swap_distance import best_of, draws

    assert best_of([-1.0, 2.0, 0.5], batch=2) == pytest.approx((2 + 2 + 0.5) / 3)
    assert best_of([-1.0, -2.0, -0.5], batch=2) == 0.0
    tiny = SubjectModel.load(str(tiny_model_dir), "cpu")
    row = tiny.token_ids("The quick brown fox jumps over the lazy dog")
    allowed = allowed_tokens(tiny, True)
    embedding = embedding_matrix(tiny).float()
    _, (grad,) = token_gradients(tiny, [row], 1, 3, "max")
    peak = 4
    drawn = draws(grad, row, peak, allowed, embedding, torch.Generator().manual_seed(0))
    assert set(drawn) == {"k64", "k16", "dist0.5", "dist2.0"}
    for rule, swaps in drawn.items():
        assert len(swaps) == 256 and {p for p, _ in swaps} <= set(range(peak + 1))
        for p, t in swaps:
            assert t != row[p] and allowed[t]
            if rule in ("k64", "k16"):
                score = grad[p].masked_fill(~allowed, -torch.inf)
                score[row[p]] = -torch.inf
                assert t in score.topk(64 if rule == "k64" else 16).indices.tolist()
    # The distance rules choose nearer tokens than the gradient alone does.
    def mean_distance(rule: str) -> float:
        return float(sum((embedding[t] - embedding[row[p]]).norm() for p, t in drawn[rule]) / len(drawn[rule]))

    assert mean_distance("dist2.0") < mean_distance("dist0.5") < mean_distance("k64")

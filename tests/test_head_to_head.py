"""bench/head_to_head.py: paired ratios with intervals that say "cannot tell" when the runs cannot, a
gradient_quality.py log read into rows, and the committed data set it reads; bench/climb_rates.py's
counts of risers per level."""

from __future__ import annotations

import math
from pathlib import Path

from head_to_head import DATA, against_both, compare, interval, log_rows, read_rows

LOG = """neuron 1577: gradient from the best start, seed 7
neuron 1577: gcg from the best start, seed 7

| neuron | dataset max (xent) | method | start | best @500 (x dataset) | best @2000 (x dataset) | xent of best @2000 |
|---:|---:|---|---|---:|---:|---:|
| 1577 | 1.438 (4.92) | gradient | best | 2.867 (1.99x) | 4.240 (2.95x) | 9.95 |
| 1577 | 1.438 (4.92) | gcg | best | 2.126 (1.48x) | 5.679 (3.95x) | 10.57 |
| 478 | 1.000 (4.00) | gcg | neutral | 0.5 (0.50x) | 0.9 (0.90x) | 9.0 |
"""


def rows(method: str, values: dict[tuple[int, int], float]) -> list[dict]:
    return [
        {"neuron": n, "group": "bench", "seed": s, "method": method, "best_x_dataset_max": v, "section": "t"}
        for (n, s), v in values.items()
    ]


def test_at_or_above_both_peers_is_read_per_seed_and_per_neuron() -> None:
    # Neuron 1: below nanoGCG at seed 0, above both at seed 1, above both in geometric mean. Neuron 2:
    # below the plain GCG at seed 1 and in mean. Neuron 3 has no plain GCG run: it is not counted.
    default = {(1, 0): 2.0, (1, 1): 4.0, (2, 0): 3.0, (2, 1): 1.0, (3, 0): 9.0}
    nano = {(1, 0): 2.5, (1, 1): 1.0, (2, 0): 1.0, (2, 1): 1.0, (3, 0): 1.0}
    gcg = {(1, 0): 1.0, (1, 1): 3.0, (2, 0): 2.0, (2, 1): 2.0}
    lines = against_both(rows("default", default) + rows("nanogcg", nano) + rows("gcg", gcg), "default")
    assert lines == [
        ["bench", "0", "2", "1", "1 (nanogcg)"],
        ["bench", "1", "2", "1", "2 (gcg)"],
        ["bench", "geometric mean over seeds", "2", "1", "2 (gcg)"],  # 1: 2.83 against 1.58 and 1.73
        # Each neuron is ≥ both at one of its two seeds: a seed with both, a half times a half.
        ["bench", "one seed on all (each neuron's share of seeds, multiplied)", "2", "25%", "1: 1 of 2 seeds, 2: 1 of 2 seeds"],
    ]


def test_a_level_run_counts_as_at_or_above_and_a_neuron_always_ahead_is_not_named() -> None:
    default = {(1, 0): 2.0, (1, 1): 2.0, (1, 2): 2.0, (2, 0): 3.0}
    nano = {(1, 0): 2.0, (1, 1): 2.5, (1, 2): 1.0, (2, 0): 1.0}
    gcg = {(1, 0): 1.0, (1, 1): 1.0, (1, 2): 1.0, (2, 0): 3.0}
    last = against_both(rows("default", default) + rows("nanogcg", nano) + rows("gcg", gcg), "default")[-1]
    assert last[2:] == ["2", "67%", "1: 2 of 3 seeds"]  # 2 of 3 on neuron 1 (level at seed 0), 1 of 1 on neuron 2


def test_a_log_gives_its_best_start_rows_at_2000_with_its_seed(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    path.write_text(LOG)
    got = log_rows(path, "29")
    assert [(r["neuron"], r["seed"], r["method"], r["best_x_dataset_max"], r["section"]) for r in got] == [
        (1577, 7, "default", 2.95, "29"),  # the search's rows are named by --as
        (1577, 7, "gcg", 3.95, "29"),
    ]  # the neutral-start row is not a best-start run


def test_the_interval_is_students_t_of_the_log_ratios() -> None:
    logs = [math.log(1.2), math.log(1.5), math.log(0.9)]
    mean, low, high = interval(logs)
    assert math.isclose(mean, math.exp(sum(logs) / 3))
    sd = math.sqrt(sum((x - math.log(mean)) ** 2 for x in logs) / 2)
    assert math.isclose(math.log(high) - math.log(mean), 4.302653 * sd / math.sqrt(3), rel_tol=1e-5)  # t(0.975, 2)
    assert math.isclose(math.log(mean) - math.log(low), math.log(high) - math.log(mean))
    assert math.isnan(interval([0.1])[1])


def test_a_steady_win_is_ahead_and_a_split_one_cannot_be_told_apart() -> None:
    steady = {(1, s): 2.0 + 0.01 * s for s in range(5)} | {(2, s): 3.0 for s in range(5)}
    peer = {(1, s): 1.5 for s in range(5)} | {(2, s): 2.0 for s in range(5)}
    lines = compare(rows("default", steady) + rows("peer", peer), "default", "peer")
    assert lines[0][:4] == ["peer", "all 2", "10", "10 / 0 / 0"]
    assert [line[6] for line in lines] == ["cannot tell", "ahead", "ahead"]  # 2 neurons: too few to tell overall

    split = {(1, s): v for s, v in enumerate([3.0, 1.0, 3.0, 1.0])}
    other = {(1, s): v for s, v in enumerate([1.0, 3.0, 1.0, 3.0])}
    (one,) = compare(rows("default", split) + rows("peer", other), "default", "peer")
    assert one[3] == "2 / 0 / 2" and one[4] == "1.00" and one[6] == "cannot tell"


def test_only_runs_both_methods_have_are_paired() -> None:
    lines = compare(rows("default", {(1, 0): 2.0, (1, 1): 2.0}) + rows("peer", {(1, 1): 2.0, (1, 2): 9.0}), "default", "peer")
    assert lines == [["peer", "1", "1", "0 / 1 / 0", "1.00", "–", "one run"]]


def test_the_committed_data_holds_each_bench_neuron_at_three_seeds_or_more_for_all_three_methods() -> None:
    data = read_rows(DATA)
    for neuron in (165, 1060, 1577, 1722, 1990):
        for method in ("default", "nanogcg", "gcg"):
            assert len({r["seed"] for r in data if r["neuron"] == neuron and r["method"] == method}) >= 3
    assert all(r["best_x_dataset_max"] > 0 for r in data)


def test_climb_rates_count_risers_in_the_leads_own_batches_and_in_each_gcg_step() -> None:
    from climb_rates import gcg_counts, search_counts

    def row(iteration: int, activation: float, xent: str = "", source: str = "gradient") -> dict:
        return {"iteration": str(iteration), "activation": str(activation), "xent": xent, "source": source, "error": ""}

    records = [
        row(0, 1.0, "4.0", "seed"),
        # a readable turn: the readable slots' children have cross-entropies; left out of the rate
        row(1, 1.2, "5.0"), row(1, 0.5, "4.5"), row(1, 0.9),
        # lead-only: one riser (it got a cross-entropy), two that did not rise
        row(2, 1.6, "6.0"), row(2, 1.1), row(2, 1.15),
        # lead-only at level 1.5x: no riser
        row(3, 1.5), row(3, 1.59),
    ]
    counts, start = search_counts(records)
    assert start == 1.0
    assert dict(counts) == {1.0: [3, 1, 1], 1.5: [2, 0, 1]}  # the readable turn lifted the best to 1.2 first

    steps = [{"activation": 2.0, "step": 0}] + [{"activation": a, "step": 1} for a in (2.5, 1.0, 3.2)] + [
        {"activation": a, "step": 2} for a in (3.0, 3.1)
    ]
    assert dict(gcg_counts(steps)) == {1.0: [3, 2, 1], 1.5: [2, 0, 1]}

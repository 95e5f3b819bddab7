"""How often a step's candidates beat the prompt they came from: the search's lead against the plain GCG.

Reads runs that bench/gradient_quality.py left in its results folders: the search's run folder
(`gradient-best-N/records.csv`) and the plain GCG's records (`gcg-best-N[-seedS].json`). For each
level the climb has reached (the best so far as a multiple of the start, in steps of 0.5x) it counts
the candidates measured at that level and how many beat the best so far:

- the search: its lead-only gradient batches (with `--readable-every 2`, every other one), where all
  children are the lead's. A batch is lead-only when none of its records has a cross-entropy but those
  that beat the best (the readable slots' children all get one; the lead's get one only when they beat
  it). Its other batches mix both and are left out of the rate, not of the budget.
- the plain GCG: every step, its candidates against the prompt it stood on.

    python bench/climb_rates.py --neuron 1577 DIR [DIR ...]

A higher rate at a level means each candidate there is more likely to lift the climb; how far a run
climbs also depends on how many candidates it spends on the climb (the table's counts).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from common import lead_iterations, read_records


def level(best: float, start: float, step: float = 0.5) -> float:
    """The bin of best/start: its multiple rounded down to `step`, capped at 5."""
    return min(int(best / start / step) * step, 5.0)


def search_counts(records: list[dict]) -> tuple[dict[float, list[int]], float]:
    """Per level: [candidates, risers, batches] of the lead-only gradient batches; and the start (the
    first record's activation)."""
    start = float(records[0]["activation"])
    counts: dict[float, list[int]] = defaultdict(lambda: [0, 0, 0])
    for lead, rows in lead_iterations(records):
        if lead is None:
            continue
        best = float(lead["activation"])
        values = [float(r["activation"]) for r in rows]
        risers = sum(v > best for v in values)
        with_xent = sum(1 for r in rows if r["xent"])
        if rows[0]["source"] == "gradient" and with_xent <= risers:
            cell = counts[level(best, start)]
            cell[0] += len(values)
            cell[1] += risers
            cell[2] += 1
    return counts, start


def gcg_counts(records: list[dict]) -> dict[float, list[int]]:
    """Per level: [candidates, risers, steps] of a plain GCG run, against the prompt it stood on."""
    start = records[0]["activation"]
    steps: dict[int, list[float]] = defaultdict(list)
    for row in records[1:]:
        steps[row["step"]].append(row["activation"])
    counts: dict[float, list[int]] = defaultdict(lambda: [0, 0, 0])
    current = start
    for _, values in sorted(steps.items()):
        cell = counts[level(current, start)]
        cell[0] += len(values)
        cell[1] += sum(v > current for v in values)
        cell[2] += 1
        current = max(current, max(values))
    return counts


def add(total: dict[float, list[int]], part: dict[float, list[int]]) -> None:
    for key, cell in part.items():
        total[key] = [a + b for a, b in zip(total.get(key, [0, 0, 0]), cell)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neuron", type=int, required=True)
    parser.add_argument("folders", nargs="+", type=Path, help="gradient_quality.py --results-dir folders, one per seed")
    args = parser.parse_args()

    ours: dict[float, list[int]] = {}
    gcg: dict[float, list[int]] = {}
    runs = [0, 0]
    for folder in args.folders:
        run = folder / f"gradient-best-{args.neuron}"
        if (run / "records.csv").is_file():
            add(ours, search_counts(read_records(run))[0])
            runs[0] += 1
        for peer in sorted(folder.glob(f"gcg-best-{args.neuron}*.json")):
            add(gcg, gcg_counts(json.loads(peer.read_text())["records"]))
            runs[1] += 1
    print(f"neuron {args.neuron}: {runs[0]} search runs (lead-only batches), {runs[1]} plain GCG runs\n")
    print("| level (best so far / start) | search: risers / children | rate | batches | plain GCG: risers / candidates | rate | steps |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(set(ours) | set(gcg)):
        o, g = ours.get(key, [0, 0, 0]), gcg.get(key, [0, 0, 0])
        rate = lambda c: f"{c[1] / c[0]:.3f}" if c[0] else "–"  # noqa: E731
        print(f"| {key:.1f}x | {o[1]} / {o[0]} | {rate(o)} | {o[2]} | {g[1]} / {g[0]} | {rate(g)} | {g[2]} |")


if __name__ == "__main__":
    main()

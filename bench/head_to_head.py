"""How sure is "ahead of the peers"? Paired ratios of the search's best to each peer's, with 95% intervals.

Reads bench/data/head_to_head.csv: one row per run of bench/gradient_quality.py (neuron, the bench's five
or the five drawn at random, seed, method, the best at 2,000 measured prompts as a multiple of the
neuron's dataset max, and the bench/RESULTS.md section that measured it). `--log FILE` adds the rows of a
gradient_quality.py output (its table and its "seed N" lines); `--save` writes them into the CSV.

For each method against the reference (`--reference`, default `default`), over the runs both have (same
neuron and seed): runs ahead, level and behind, and the geometric mean of the ratio reference / method
with a 95% Student-t interval of its logarithm. Per neuron the interval is over its seeds. Over all
neurons each neuron's mean counts once and the interval is over neurons, since a neuron's seeds share its
landscape and are not independent draws. An interval that holds 1 means those runs cannot tell the two
apart; one from 2 or 3 seeds is wide, as it should be. Cells are rounded to 0.01x, as the tables are; a
tie at that rounding counts as level.

A second table reads issue 33's first target ("≥ both nanoGCG and the plain GCG on each neuron") per seed
and per neuron (the geometric mean over the seeds where all three ran), for the bench's five and the five
drawn at random, and names the neurons and peers it misses on. Its last line per group estimates how often
one seed would meet it on every neuron: each neuron's share of seeds at or above both, multiplied.

    python bench/head_to_head.py
    python bench/head_to_head.py --neurons 1577 --log run.log
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats  # a dependency of sentence-transformers

DATA = Path(__file__).parent / "data" / "head_to_head.csv"
FIELDS = ["neuron", "group", "seed", "method", "best_x_dataset_max", "section"]
BENCH = {165, 1060, 1577, 1722, 1990}


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [
            {**row, "neuron": int(row["neuron"]), "seed": int(row["seed"]), "best_x_dataset_max": float(row["best_x_dataset_max"])}
            for row in csv.DictReader(f)
        ]


def log_rows(path: Path, section: str, gradient_as: str = "default") -> list[dict]:
    """The runs in one bench/gradient_quality.py output: its table rows with their seed (from the
    "neuron N: METHOD from the best start, seed S" lines; a run without `--seed` is seed 0). The
    search's rows (method `gradient`) are named `gradient_as`: `default`, or what a `--set` made of it."""
    text = path.read_text()
    seeds = {int(s) for s in re.findall(r"from the best start, seed (\d+)", text)} or {0}
    if len(seeds) != 1:
        raise SystemExit(f"{path}: more than one seed in one log ({sorted(seeds)})")
    (seed,) = seeds
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].isdigit() and cells[3] == "best":
            best = re.search(r"\(([\d.]+)x\)", cells[5])
            if best:
                neuron = int(cells[0])
                rows.append({
                    "neuron": neuron, "group": "bench" if neuron in BENCH else "random", "seed": seed,
                    "method": gradient_as if cells[2] == "gradient" else cells[2], "best_x_dataset_max": round(float(best.group(1)), 2), "section": section,
                })
    if not rows:
        raise SystemExit(f"{path}: no table rows from the best start")
    return rows


def interval(logs: list[float]) -> tuple[float, float, float]:
    """exp of the mean of `logs` and of its 95% Student-t interval (NaN bounds for fewer than 2)."""
    mean = float(np.mean(logs))
    if len(logs) < 2:
        return math.exp(mean), math.nan, math.nan
    half = stats.t.ppf(0.975, len(logs) - 1) * float(np.std(logs, ddof=1)) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def compare(rows: list[dict], reference: str, method: str) -> list[list[str]]:
    """The table lines for `reference` against `method`: all neurons (when there are two or more), then
    each neuron."""
    best = {(r["neuron"], r["seed"], r["method"]): r["best_x_dataset_max"] for r in rows}
    by_neuron: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for n, s, m in sorted(best):
        if m == method and (n, s, reference) in best:
            by_neuron[n].append((best[(n, s, reference)], best[(n, s, method)]))
    if not by_neuron:
        return []

    def line(name: str, pairs: list[tuple[float, float]], logs: list[float]) -> list[str]:
        ahead = sum(a > b for a, b in pairs)
        level = sum(a == b for a, b in pairs)
        mean, low, high = interval(logs)
        if math.isnan(low):
            span, verdict = "–", "one run"
        else:
            span = f"{low:.2f}–{high:.2f}"
            verdict = "ahead" if low > 1 else "behind" if high < 1 else "cannot tell"
        return [method, name, str(len(pairs)), f"{ahead} / {level} / {len(pairs) - ahead - level}", f"{mean:.2f}", span, verdict]

    def logs_of(pairs: list[tuple[float, float]]) -> list[float]:
        return [math.log(a / b) for a, b in pairs]

    everything = [p for pairs in by_neuron.values() for p in pairs]
    # All neurons: each neuron's mean log ratio counts once, so the interval is over neurons, not runs.
    lines = [line(f"all {len(by_neuron)}", everything, [float(np.mean(logs_of(p))) for p in by_neuron.values()])] if len(by_neuron) > 1 else []
    for neuron, pairs in sorted(by_neuron.items()):
        lines.append(line(str(neuron), pairs, logs_of(pairs)))
    return lines


PEERS = ("nanogcg", "gcg")


def against_both(rows: list[dict], reference: str, peers: tuple[str, ...] = PEERS) -> list[list[str]]:
    """Issue 33's first target, "≥ both peers on each neuron", read two ways for each group of neurons:
    per seed (the neurons with a run of the reference and of every peer at that seed), and per neuron
    (the geometric mean over the seeds where all three ran). Each line: the neurons counted, those where
    the reference is ≥ every peer, and those where it is not (with the peers above it)."""
    best = {(r["neuron"], r["seed"], r["method"]): r["best_x_dataset_max"] for r in rows}
    group = {r["neuron"]: r["group"] for r in rows}
    complete = sorted({(n, s) for n, s, m in best if m == reference and all((n, s, p) in best for p in peers)})

    def above(cell: dict[str, float]) -> list[str]:
        return [p for p in peers if cell[p] > cell[reference]]

    def line(name: str, seed: str, cells: dict[int, dict[str, float]]) -> list[str]:
        behind = {n: above(c) for n, c in sorted(cells.items())}
        missed = ", ".join(f"{n} ({' and '.join(ps)})" for n, ps in behind.items() if ps) or "–"
        return [name, seed, str(len(cells)), str(sum(not ps for ps in behind.values())), missed]

    lines = []
    for name in sorted({group[n] for n, _ in complete}):
        neurons = sorted({n for n, _ in complete if group[n] == name})
        wins: dict[int, list[bool]] = defaultdict(list)
        for seed in sorted({s for n, s in complete if group[n] == name}):
            cells = {n: {m: best[(n, seed, m)] for m in (reference, *peers)} for n in neurons if (n, seed) in complete}
            lines.append(line(name, str(seed), cells))
            for n, c in cells.items():
                wins[n].append(not above(c))
        means = {
            n: {m: math.exp(float(np.mean([math.log(best[(n, s, m)]) for k, s in complete if k == n]))) for m in (reference, *peers)}
            for n in neurons
        }
        lines.append(line(name, "geometric mean over seeds", means))
        lines.append(chance(name, wins))
    return lines


def chance(group: str, wins: dict[int, list[bool]]) -> list[str]:
    """How often one seed would find the reference ≥ both peers on every neuron of a group: the product of
    each neuron's share of seeds where it is, as if the neurons were independent. An estimate from few
    seeds a neuron, given as a rough share; the last cell names the neurons that are not ≥ both at
    every seed, with their counts."""
    share = math.prod(sum(w) / len(w) for w in wins.values())
    counts = ", ".join(f"{n}: {sum(w)} of {len(w)} seeds" for n, w in sorted(wins.items()) if not all(w)) or "–"
    return [group, "one seed on all (each neuron's share of seeds, multiplied)", str(len(wins)), f"{share:.0%}", counts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the CSV of runs (default: %(default)s)")
    parser.add_argument("--log", type=Path, action="append", default=[], help="add the runs of a gradient_quality.py output (repeatable)")
    parser.add_argument("--section", default="", help="the RESULTS.md section that --log's runs belong to (kept with --save)")
    parser.add_argument("--as", dest="gradient_as", default="default", help="the name of --log's search rows, e.g. the --set it ran with (default: %(default)s)")
    parser.add_argument("--save", action="store_true", help="write --log's runs into --data (a run already there is replaced)")
    parser.add_argument("--reference", default="default", help="the method every other one is compared with (default: %(default)s)")
    parser.add_argument("--neurons", default="", help="comma-separated neurons to keep (default: all)")
    args = parser.parse_args()

    rows = read_rows(args.data)
    for path in args.log:
        new = log_rows(path, args.section, args.gradient_as)
        keys = {(r["neuron"], r["seed"], r["method"]) for r in new}
        rows = [r for r in rows if (r["neuron"], r["seed"], r["method"]) not in keys] + new
    if args.save and args.log:
        with args.data.open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(sorted(rows, key=lambda r: (r["group"], r["neuron"], r["seed"], r["method"])))
    if args.neurons:
        keep = {int(n) for n in args.neurons.split(",")}
        rows = [r for r in rows if r["neuron"] in keep]

    print(f"{args.reference} against each method: the geometric mean of {args.reference}'s best / the method's best, same neuron and seed\n")
    print("| method | neurons | runs | ahead / level / behind | geometric mean ratio | 95% interval | verdict |")
    print("|---|---|---:|---:|---:|---:|---|")
    for method in sorted({r["method"] for r in rows} - {args.reference}):
        for cells in compare(rows, args.reference, method):
            print("| " + " | ".join(cells) + " |")
    print(f"\n{args.reference} at or above both {' and '.join(PEERS)}: per seed, and per neuron over its seeds\n")
    print(f"| group | seed | neurons | {args.reference} ≥ both | below a peer (the peers above) |")
    print("|---|---|---:|---:|---|")
    for cells in against_both(rows, args.reference):
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

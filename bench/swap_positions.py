"""Where the lead's one-swap children rose: rates by distance before the parent's peak, read from runs' records.

    python bench/swap_positions.py RUN_FOLDER [RUN_FOLDER ...]

Each folder is a run's (or a bench run's) results folder holding records.csv. A child is a prompt of the
same length as the best prompt measured before its iteration (the lead, its parent) that differs from it in
one token at or before the parent's peak. It rose if its activation is above the parent's. bench/RESULTS.md
section 25 reads section 23's and 24's runs with this.

A second table sets apart the children that only re-apply swaps which rose the iteration before: a child of
the previous lead that changed one token and beat it is a winner, and a child of the new lead whose every
change is a winner's swap (`--combine`'s stacked rows, or one winner's swap alone) is counted by how many it
re-applies, against the fresh one-swap children. Section 26 reads it.

With `--ranks LAYER` (and `--model`, the bundled Gemma by default), a third table: the same one-swap
children by their token's rank among the top 64 tokens the activation's gradient alone gives the parent
at that position (the lead's ranking; recomputed, about a second a parent). The neuron is read from the
folder's name (`gradient-best-N`, as bench/gradient_quality.py names it) or given with `--neuron`.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from common import lead_iterations, read_records

BOUNDS = (1, 2, 4, 8, 16, 32)
NAMES = ("0 (the peak token)", "1", "2-3", "4-7", "8-15", "16-31", "32+")


def bucket(distance: int) -> int:
    return next((i for i, bound in enumerate(BOUNDS) if distance < bound), len(BOUNDS))


def _changed(tokens: list, parent: list) -> list[int]:
    """The positions where a child differs from its parent; none for a child of another length (an edit)."""
    return [i for i, (a, b) in enumerate(zip(tokens, parent)) if a != b] if len(tokens) == len(parent) else []


def _add(cell: list, rise: float) -> None:
    """One child into a [children, rises, summed rise] cell."""
    cell[0] += 1
    cell[1] += rise > 0
    cell[2] += max(rise, 0.0)


def count(folder: Path) -> dict[int, list[float]]:
    """Per bucket: [children, rises, summed rise] of one run's one-swap children of the lead."""
    out: dict[int, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for best, measured in lead_iterations(read_records(folder)):
        if best is not None:
            parent = json.loads(best["tokens"])
            values = json.loads(best["values"])
            peak = max(range(len(values)), key=values.__getitem__)
            for row in measured:
                changed = _changed(json.loads(row["tokens"]), parent)
                if len(changed) != 1 or changed[0] > peak:
                    continue
                _add(out[bucket(peak - changed[0])], float(row["activation"]) - float(best["activation"]))
    return out


def restacked(folder: Path) -> dict[int, list[int]]:
    """Per number of winners' swaps re-applied (0: a fresh one-swap child): [children, rose, won the
    iteration] over one run's children of the lead of the same length."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    winners: dict[int, set[str]] = {}  # position -> tokens that rose there, the iteration before
    for best, measured in lead_iterations(read_records(folder)):
        found: dict[int, set[str]] = defaultdict(set)
        if best is not None:
            lead = json.loads(best["tokens"])
            top = max(measured, key=lambda r: float(r["activation"]), default=None)
            for row in measured:
                tokens = json.loads(row["tokens"])
                changed = _changed(tokens, lead)
                if not changed:
                    continue
                rose = float(row["activation"]) > float(best["activation"])
                if all(tokens[i] in winners.get(i, ()) for i in changed):
                    kind = len(changed)
                elif len(changed) == 1:
                    kind = 0
                else:
                    continue
                cell = out[kind]
                cell[0] += 1
                cell[1] += rose
                cell[2] += rose and row is top  # the iteration's best prompt, and above the lead
                if len(changed) == 1 and rose:
                    found[changed[0]].add(tokens[changed[0]])
        winners = found
    return out


RANKS = ((0, 8), (8, 16), (16, 32), (32, 64), (64, None))


def ranks(folder: Path, subject, layer: int, neuron: int, top_k: int = 64) -> dict[int, list[float]]:
    """Per bucket of RANKS: [children, rises, summed rise] of one run's one-swap children of the lead, by their
    token's rank among the `top_k` allowed tokens with the highest gradient at that position of the parent
    (64 and beyond: not among them, e.g. a re-applied winner's swap or a readable slot's child)."""
    from neuron_search.services.search.candidates import allowed_tokens, member_swaps

    allowed = allowed_tokens(subject, True)
    out: dict[int, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for best, measured in lead_iterations(read_records(folder)):
        if best is not None:
            parent = subject.token_ids(best["prompt"])
            children = []
            for row in measured:
                tokens = subject.token_ids(row["prompt"])
                changed = _changed(tokens, parent)
                if len(changed) == 1:
                    children.append((changed[0], tokens[changed[0]], float(row["activation"]) - float(best["activation"])))
            if children:
                (ranked,) = member_swaps(subject, [(parent, 0.0)], layer, neuron, "max", allowed, top_k)
                for position, token, rise in children:
                    order = [t for t in ranked.tokens[position].tolist() if t != parent[position]][:top_k]
                    rank = order.index(token) if token in order else top_k
                    _add(out[next(i for i, (lo, hi) in enumerate(RANKS) if rank >= lo and (hi is None or rank < hi))], rise)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders holding records.csv")
    parser.add_argument("--ranks", type=int, metavar="LAYER", help="also the children by their token's gradient rank (loads the model)")
    parser.add_argument("--model", default="embedded", help="the runs' model, for --ranks (default: the bundled Gemma)")
    parser.add_argument("--neuron", type=int, help="the runs' neuron, for --ranks (default: from each folder's name)")
    args = parser.parse_args()
    total = _summed(count(folder) for folder in args.folders)
    children = sum(cell[0] for cell in total.values()) or 1
    print(f"{len(args.folders)} runs")
    _table(
        "| tokens before the peak | one-swap children of the lead | share | beat it | rate | mean rise a child |",
        (f"| {NAMES[b]} | {int(n):,} | {n / children:.0%} | {int(rises)} | {rises / n:.1%} | {rise / n:.4f} |" for b, (n, rises, rise) in sorted(total.items())),
    )  # fmt: skip
    print(f"all: {int(sum(c[1] for c in total.values())):,} of {int(children):,} rose")

    def again(k: int) -> str:
        return "fresh: one swap" if k == 0 else ("re-applying 1 winner's swap" if k == 1 else f"re-applying {k} winners' swaps")

    print()
    _table(
        "| children of the lead | children | rose | rate | won their iteration |",
        (f"| {again(k)} | {n:,} | {rose:,} | {rose / n:.1%} | {won} ({won / n:.1%}) |" for k, (n, rose, won) in sorted(_summed(restacked(f) for f in args.folders).items())),
    )  # fmt: skip
    if args.ranks is not None:
        from neuron_search.services.runtime import subject_model

        subject = subject_model(args.model, "cpu")
        neuron = lambda folder: args.neuron if args.neuron is not None else int(folder.name.rsplit("-", 1)[-1])  # noqa: E731
        by_rank = _summed(ranks(folder, subject, args.ranks, neuron(folder)) for folder in args.folders)

        def rank(b: int) -> str:
            lo, hi = RANKS[b]
            return f"{lo}-{hi - 1}" if hi is not None else f"{lo}+ (not among the top 64)"

        print()
        _table(
            "| the token's gradient rank at its position | one-swap children | beat the lead | rate | mean rise of a rise |",
            (f"| {rank(b)} | {int(n):,} | {int(rises):,} | {rises / n:.1%} | {rise / max(rises, 1):.4f} |" for b, (n, rises, rise) in sorted(by_rank.items())),
        )  # fmt: skip


def _summed(tables: Iterable[dict[int, list]]) -> dict[int, list]:
    """Tables of cells (lists of counts) added up key by key, over runs."""
    total: dict[int, list] = {}
    for table in tables:
        for key, cell in table.items():
            total[key] = [a + b for a, b in zip(total.get(key, [0] * len(cell)), cell)]
    return total


def _table(header: str, rows: Iterable[str]) -> None:
    """A markdown table: the header, its rule (the first column left, the others right) and the rows."""
    print(header)
    print("|---|" + "---:|" * (header.count("|") - 2))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()

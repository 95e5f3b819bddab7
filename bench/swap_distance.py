"""One step of the lead, measured: how often a one-swap child beats its parent under four ways of choosing swaps.

    python bench/swap_distance.py RUN_FOLDER [RUN_FOLDER ...] [--threads 2] [--json FILE]

Each folder is a bench run's results folder (`gradient-best-N`, as bench/gradient_quality.py names it) holding
records.csv. From each neuron's first folder, two lead states are taken: the best prompt among the first 300 and
the first 1,200 measured. For each state, 256 children of one swap each are drawn at a position drawn uniformly up
to the parent's peak (GCG's draw, as the lead draws), and a token drawn uniformly among that position's 64 (or 16)
allowed tokens of highest score, and every child is measured with the bundled Gemma at layer 9:

- k64: the activation's gradient alone (the lead's ranking before `--lead-distance`);
- k16: the same, among the top 16;
- dist0.5, dist2.0: the gradient less 0.5 or 2 times the token's embedding distance to the parent's token, both
  z-scored over the allowed tokens at that position (Faster-GCG's regularizer, written here on its own; the
  search's `--lead-distance` scales by the spreads over every 64th token of the vocabulary instead).

Printed per state and rule: the share of children above the parent, and the expected rise of the best of 32 of
them, or 0 if none rises (the lead's step: `--lead-children 32`, elitist), as a share of the parent's activation.
bench/RESULTS.md section 34 reads it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch

from common import read_records

LAYER = 9
CHILDREN = 256
STATES = (300, 1200)
RULES = ("k64", "k16", "dist0.5", "dist2.0")


def draws(grad: torch.Tensor, row: list[int], peak: int, allowed: torch.Tensor, embedding: torch.Tensor, rng: torch.Generator) -> dict[str, list[tuple[int, int]]]:
    """Per rule, CHILDREN (position, token) swaps: a uniform position up to `peak`, a uniform token among its top."""
    n = peak + 1
    score = grad[:n].clone()
    score[:, ~allowed] = -torch.inf
    own = torch.tensor(row[:n])
    score[torch.arange(n), own] = -torch.inf

    def draw(ranking: torch.Tensor, k: int) -> list[tuple[int, int]]:
        top = ranking.topk(k, dim=-1).indices
        positions = torch.randint(0, n, (CHILDREN,), generator=rng)
        picks = torch.randint(0, k, (CHILDREN,), generator=rng)
        return list(zip(positions.tolist(), top[positions, picks].tolist()))

    finite = torch.isfinite(score)

    def z(x: torch.Tensor) -> torch.Tensor:
        count = finite.sum(1, keepdim=True)
        mean = torch.where(finite, x, 0.0).sum(1, keepdim=True) / count
        spread = (torch.where(finite, x - mean, 0.0).square().sum(1, keepdim=True) / count).sqrt()
        return (x - mean) / spread

    distance = torch.cdist(embedding[own], embedding)
    out = {"k64": draw(score, 64), "k16": draw(score, 16)}
    for c in (0.5, 2.0):
        out[f"dist{c}"] = draw(torch.where(finite, z(score) - c * z(distance), -torch.inf), 64)
    return out


def best_of(rises: list[float], batch: int = 32) -> float:
    """The expected max(0, best rise) of `batch` children drawn without replacement from `rises`."""
    x = sorted((max(v, 0.0) for v in rises), reverse=True)
    total = math.comb(len(x), batch)
    return sum(v * math.comb(len(x) - 1 - i, batch - 1) / total for i, v in enumerate(x[: len(x) - batch + 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="bench run folders (gradient-best-N) holding records.csv")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write every child's rise here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from neuron_search.services.model.gradient import embedding_matrix, token_gradients
    from neuron_search.services.runtime import subject_model
    from neuron_search.services.search.candidates import allowed_tokens

    subject = subject_model("embedded", "cpu")
    allowed = allowed_tokens(subject, True)
    embedding = embedding_matrix(subject).float()
    states, seen = [], set()
    for folder in args.folders:
        neuron = int(folder.name.rsplit("-", 1)[-1])
        if neuron in seen:
            continue
        seen.add(neuron)
        rows = read_records(folder)
        for at in STATES:
            best = max((r for r in rows[:at] if r["activation"]), key=lambda r: float(r["activation"]))
            states.append((neuron, at, best["prompt"], float(rows[0]["activation"])))
    out, table = [], defaultdict(dict)
    for index, (neuron, at, prompt, start) in enumerate(states):
        row = subject.token_ids(prompt)
        (parent,) = subject.measure([prompt], LAYER, neuron)
        _, (grad,) = token_gradients(subject, [row], LAYER, neuron, "max")
        rng = torch.Generator().manual_seed(index)
        for rule, swaps in draws(grad, row, parent["peak"], allowed, embedding, rng).items():
            children = [subject.decode(row[:p] + [t] + row[p + 1 :]) for p, t in swaps]
            measured = subject.measure(children, LAYER, neuron, batch_size=64)
            rises = [(m["activation"] - parent["activation"]) / start for m in measured if not m["error"]]
            table[(neuron, at)][rule] = (sum(r > 0 for r in rises) / len(rises), best_of(rises) * start / parent["activation"])
            out.append({"neuron": neuron, "at": at, "rule": rule, "parent": parent["activation"] / start, "rises": rises})
            print(f"{neuron} @{at} {rule}: {table[(neuron, at)][rule][0]:.1%} rose", file=sys.stderr, flush=True)
    print("| neuron | lead after | " + " | ".join(f"{r}: rose / step" for r in RULES) + " |")
    print("|---:|---:|" + "---:|" * len(RULES))
    for (neuron, at), cells in sorted(table.items()):
        print(f"| {neuron} | {at} | " + " | ".join(f"{cells[r][0]:.1%} / {cells[r][1]:.2%}" for r in RULES) + " |")
    for r in RULES:
        cells = [c[r] for c in table.values()]
        larger = sum(c[r][1] > c["k64"][1] for c in table.values())
        print(f"{r}: rose {sum(c[0] for c in cells) / len(cells):.1%} of children, step {sum(c[1] for c in cells) / len(cells):.2%} "
              f"of the parent in the mean; step above k64's in {larger} of {len(cells)} states")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out))


if __name__ == "__main__":
    main()

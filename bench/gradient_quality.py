"""Gradient-guided search against the neuron's best real text (issue #12's benchmark).

    python bench/gradient_quality.py [--neurons 5] [--budgets 500,2000] [--methods gradient,mixed,llm] [--smoke]
                                     [--results-dir DIR]

On the bundled Gemma 3 270M, layer 9, the neurons of bench/RESULTS.md sections 5 and 6 (drawn with
seed 0). For each neuron:
  (a) the dataset max: the top snippet of `run.py exemplars` over the standard library's docstrings
      and comments (5,000 snippets of at most 64 tokens), with its cross-entropy under the model;
  and for each method, one run to the largest budget of measured prompts (seeds included), read
  at every budget from its records in the order they were measured:
  (b) `--strategy llm` (the LLM with mutations; the embedded SmolLM2),
  (c) `--strategy gradient` (no LLM),
  (d) `--strategy mixed`.
Columns: the best activation and its ratio to the dataset max, the best's cross-entropy, the best
"readable" point (the highest activation among prompts whose cross-entropy is at or below the
dataset example's; gradient and mixed runs measure every prompt's cross-entropy, llm runs none),
and the run's wall time. With --results-dir, a run already in DIR continues from its checkpoint
(the LLM runs at 2,000 prompts take longer than one sitting here) and its minutes are summed over
the sittings, less at most the one iteration a stop interrupted. Defaults as shipped otherwise
(population 8, 4 swap children and 2 edits each, a pool of the 64 best predicted swaps, one swap a
child, fluency 0.1..10).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine, pick_neurons, tiny_model_dir

from neuron_search import STOPPED_BY_USER, NeuronSearch
from services.dataset.exemplars import exemplars
from services.runtime import subject_model


def best_at(records: list[dict], budget: int, max_xent: float | None = None) -> tuple[float, float | None]:
    """The best activation (and its cross-entropy) among the first `budget` measured prompts,
    optionally among those whose cross-entropy is at most max_xent; (nan, None) if none."""
    measured = [r for r in records if r["activation"] is not None][:budget]
    if max_xent is not None:
        measured = [r for r in measured if r["xent"] is not None and r["xent"] <= max_xent]
    if not measured:
        return float("nan"), None
    best = max(measured, key=lambda r: r["activation"])
    return best["activation"], best["xent"]


class Stopwatch:
    """A progress display that adds the seconds since its last update to a file in the run's folder
    after every iteration, so a run's wall time survives being stopped and continued."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = time.perf_counter()

    @property
    def seconds(self) -> float:
        return float(self.path.read_text()) if self.path.is_file() else 0.0

    def update(self, state: dict, context: object) -> None:
        now = time.perf_counter()
        self.path.write_text(f"{self.seconds + now - self.last:.1f}")
        self.last = now

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--neurons", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated neuron indices to run instead of the drawn ones")
    parser.add_argument("--budgets", default="500,2000", help="measured prompts, comma-separated")
    parser.add_argument("--methods", default="gradient,mixed,llm")
    parser.add_argument("--snippets", type=int, default=5000, help="real-text snippets scanned for the dataset max")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seed-corpus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="seed every run with the neuron's top real snippets (default: the search's own, on for gradient and mixed)",
    )
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, a scripted LLM, a few seconds")
    parser.add_argument(
        "--results-dir",
        default="",
        help="keep the runs here (default: a new temporary folder); a run already here continues from its checkpoint",
    )
    args = parser.parse_args()
    llm = "embedded"
    if args.smoke:
        from helpers import fresh_answers, scripted

        # In --results-dir, so that a second smoke run continues the first's runs (same model path).
        model = tiny_model_dir(f"{args.results_dir}/tiny-gpt2" if args.results_dir else "")
        args.model, args.layer, args.neurons, args.budgets, args.snippets = model, 1, 1, "60,120", 300
        llm = scripted(fresh_answers(200, per_answer=8))
    budgets = sorted(int(b) for b in args.budgets.split(","))
    methods = args.methods.split(",")
    subject = subject_model(args.model, "cpu")
    neurons = [int(n) for n in args.only.split(",")] if args.only else pick_neurons(args.neurons, subject.d_mlp, args.seed)
    results_dir = args.results_dir or tempfile.mkdtemp(prefix="bench-gradient-")
    load_before = machine()

    rows = []
    for neuron in neurons:
        top = exemplars(subject, args.layer, neuron, top_k=1, max_snippets=args.snippets).records[0]
        (data_xent,) = subject.cross_entropy([subject.token_ids(top["prompt"])])
        row = {"neuron": neuron, "data": top["activation"], "data_xent": data_xent, "data_prompt": top["prompt"]}
        for method in methods:
            stopwatch = Stopwatch(Path(results_dir) / f"{method}-{neuron}.seconds")
            result = NeuronSearch(
                model=args.model, layer=args.layer, neuron=neuron, llm=llm, device="cpu", seed=args.seed,
                strategy=method, seed_corpus=args.seed_corpus, results_dir=results_dir, run_id=f"{method}-{neuron}",
                explain=False,
            ).run(progress=stopwatch, iterations=10**6, max_prompts=budgets[-1])  # fmt: skip
            if result.stop_reason == STOPPED_BY_USER:  # a table of unfinished runs would pass for the budget's
                raise SystemExit(f"Stopped during {method}-{neuron}; run again with --results-dir {results_dir} to go on.")
            records = result.records
            row[method] = {
                "minutes": stopwatch.seconds / 60,
                "calls": result.stats["llm_calls"],
                "best": {b: best_at(records, b) for b in budgets},
                "readable": {b: best_at(records, b, max_xent=data_xent) for b in budgets},
                "prompt": result.best[0] if result.best else "",
            }
        rows.append(row)

    print(
        f"model {args.model}, layer {args.layer}, neurons {neurons} (seed {args.seed}); dataset: top of "
        f"{args.snippets} standard-library snippets; budgets {budgets} measured prompts (seeds included"
        f"; --seed-corpus {({None: 'at the search default (on for gradient and mixed)', True: 'on', False: 'off'})[args.seed_corpus]})\n"
        f"machine before: {load_before}\nmachine after:  {machine()}\n"
    )
    print("| neuron | dataset max (xent) | method | " + " | ".join(f"best @{b} (x dataset)" for b in budgets)
          + f" | xent of best @{budgets[-1]} | best readable @{budgets[-1]} (x dataset) | LLM calls | minutes |")  # fmt: skip
    print("|---:|---:|---|" + "---:|" * (len(budgets) + 4))
    for row in rows:
        for method in methods:
            m = row[method]
            bests = [f"{m['best'][b][0]:.3f} ({m['best'][b][0] / row['data']:.2f}x)" for b in budgets]
            xent = m["best"][budgets[-1]][1]
            readable = m["readable"][budgets[-1]][0]
            readable_cell = "-" if readable != readable else f"{readable:.3f} ({readable / row['data']:.2f}x)"
            print(
                f"| {row['neuron']} | {row['data']:.3f} ({row['data_xent']:.2f}) | {method} | " + " | ".join(bests)
                + f" | {'-' if xent is None else f'{xent:.2f}'} | {readable_cell} | {m['calls']} | {m['minutes']:.1f} |"
            )  # fmt: skip
    print()
    for method in methods:
        for b in budgets:
            ratios = [row[method]["best"][b][0] / row["data"] for row in rows]
            readable = [row[method]["readable"][b][0] > row["data"] for row in rows]
            print(
                f"{method} @{b}: median {statistics.median(ratios):.2f}x the dataset max, lowest {min(ratios):.2f}x; "
                f"a readable prompt beats the dataset max on {sum(readable)} of {len(rows)}"
            )
    print("\nBest prompts:")
    for row in rows:
        print(f"- neuron {row['neuron']}: dataset {row['data_prompt'][:80]!r}")
        for method in methods:
            print(f"  - {method}: {row[method]['prompt'][:80]!r}")


if __name__ == "__main__":
    main()

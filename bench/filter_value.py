"""Does the semantic filter pay for itself? The same budget of LLM calls at several similarity thresholds.

    python bench/filter_value.py [--neurons 5] [--llm-calls 125] [--thresholds 0.5,0.7,1.0] [--smoke]

Generating a prompt with the LLM costs far more than measuring it, so a rejected prompt may waste
more than it saves. For the same neurons as bench/search_quality.py (same draw, same seed) this
tool runs at its defaults except the similarity threshold, and stops once it has spent `--llm-calls`
LLM calls (`--max-llm-calls`, checked after each batch). 0.5 is the original tool's threshold; 1.0 rejects exact duplicates only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine, measured_by_source, pick_neurons, tiny_model_dir

from neuron_search.context import SearchContext
from neuron_search.api import NeuronSearch
from neuron_search.services.runtime import subject_model


def main() -> None:
    default = SearchContext().similarity_threshold
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--neurons", type=int, default=5)
    parser.add_argument("--layer", type=int, default=None, help="default: the middle layer (n_layers // 2)")
    parser.add_argument("--llm-calls", type=int, default=125, help="LLM calls per run (125 x 8 = 1,000 prompts proposed)")
    parser.add_argument("--thresholds", default="0.5,0.7,1.0", help="0.5 was the original tool's; 1.0 rejects exact duplicates only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="the tiny test model and a scripted LLM, a few seconds")
    args = parser.parse_args()
    llm = "embedded"
    if args.smoke:
        from neuron_search.testing.helpers import fresh_answers, scripted

        args.model, args.neurons, args.llm_calls = tiny_model_dir(), 1, 3
        llm = scripted(fresh_answers(50, per_answer=8))
    thresholds = [float(t) for t in args.thresholds.split(",")]

    subject = subject_model(args.model, "cpu")
    layer = subject.n_layers // 2 if args.layer is None else args.layer
    neurons = pick_neurons(args.neurons, subject.d_mlp, args.seed)
    results_dir = tempfile.mkdtemp(prefix="bench-filter-")
    load_before = machine()
    rows = []
    for neuron in neurons:
        for threshold in thresholds:
            started = time.perf_counter()
            result = NeuronSearch(
                model=args.model, layer=layer, neuron=neuron, llm=llm, strategy="llm", device="cpu", seed=args.seed,
                similarity_threshold=threshold, results_dir=results_dir, run_id=f"n{neuron}-t{threshold:g}", explain=False,
            ).run(progress=False, iterations=10**6, max_llm_calls=args.llm_calls)
            stats = result.stats
            measured = measured_by_source(result.records)
            rows.append(
                {
                    "neuron": neuron, "threshold": threshold, "best": result.best[1], "stats": stats,
                    "mutation": measured["mutation"], "fallback": measured["fallback"], "minutes": (time.perf_counter() - started) / 60,
                }
            )

    print(
        f"model {args.model}, layer {layer}, neurons {neurons} (seed {args.seed}), budget {args.llm_calls} LLM calls per run, "
        f"LLM {'embedded SmolLM2-135M-Instruct' if llm == 'embedded' else llm}, default threshold {default:g}\n"
        f"machine before: {load_before}\nmachine after:  {machine()}\n"
    )
    print(
        "| neuron | threshold | LLM calls | proposed | rejected similar | rejected duplicate | measured (mutations / fallback) "
        "| best activation | minutes |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["stats"]
        print(
            f"| {r['neuron']} | {r['threshold']:g} | {s['llm_calls']} | {s['generated']} | {s['rejected_similar']} "
            f"| {s['rejected_duplicate']} | {s['measured']} ({r['mutation']} / {r['fallback']}) | {r['best']:.3f} | {r['minutes']:.1f} |"
        )
    print("\n| threshold | median best | median measured | median rejected similar | neurons where it is best |")
    print("|---:|---:|---:|---:|---:|")
    for threshold in thresholds:
        mine = [r for r in rows if r["threshold"] == threshold]
        wins = sum(
            r["best"] >= max(o["best"] for o in rows if o["neuron"] == r["neuron"]) - 1e-9 for r in mine
        )
        print(
            f"| {threshold:g} | {statistics.median(r['best'] for r in mine):.3f} "
            f"| {statistics.median(r['stats']['measured'] for r in mine):.0f} "
            f"| {statistics.median(r['stats']['rejected_similar'] for r in mine):.0f} | {wins}/{len(neurons)} |"
        )


if __name__ == "__main__":
    main()

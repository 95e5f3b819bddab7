"""Do hypotheses steer the search? The LLM search with --explain-every on and off, at equal LLM calls
(issue #13's benchmark).

    python bench/hypothesis_steering.py [--neurons 5] [--llm-calls 24] [--explain-every 6] [--smoke]

For the neurons of bench/search_quality.py (same draw, same seed), the LLM search runs twice at its
defaults, each stopped by `--max-llm-calls` (checked after each batch): once with a hypothesis
every `--explain-every` iterations, then with none, stopped at the calls the first run spent. A hypothesis costs LLM calls (the explainer's
and its generation score's) that the other arm spends proposing prompts, so the two arms get the
same total of LLM calls and the table says which found the higher activation with it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine, pick_neurons, tiny_model_dir

from neuron_search.api import NeuronSearch
from neuron_search.services.explain.run_explanation import read_explanation
from neuron_search.services.runtime import subject_model


def _arm(args, llm, layer: int, neuron: int, explain_every: int, calls: int, results_dir: str) -> dict:
    started = time.perf_counter()
    result = NeuronSearch(
        model=args.model, layer=layer, neuron=neuron, llm=llm, strategy="llm", device="cpu", seed=args.seed, explain=False,
        explain_every=explain_every, results_dir=results_dir, run_id=f"n{neuron}-every{explain_every}",
    ).run(progress=False, iterations=10**6, max_llm_calls=calls)
    hypotheses = read_explanation(result.run_dir).get("hypotheses", [])
    last = hypotheses[-1] if hypotheses else None
    return {
        "best": result.best[1],
        "calls": result.stats["llm_calls"] + result.stats["explain_llm_calls"],
        "hypothesis_calls": result.stats["explain_llm_calls"],
        "measured": result.stats["measured"],
        "hypotheses": len(hypotheses),
        "last": last,
        "minutes": (time.perf_counter() - started) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--neurons", type=int, default=5)
    parser.add_argument("--layer", type=int, default=None, help="default: the middle layer (n_layers // 2)")
    parser.add_argument("--llm-calls", type=int, default=24, help="LLM calls per run, hypotheses included")
    parser.add_argument("--explain-every", type=int, default=6, help="the 'on' arm's --explain-every")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="the tiny test model and a scripted LLM, a few seconds")
    args = parser.parse_args()
    llm = "embedded"
    if args.smoke:
        from neuron_search.testing.helpers import fresh_answers, scripted

        args.model, args.neurons, args.llm_calls, args.explain_every = tiny_model_dir(), 1, 8, 2
        llm = scripted(fresh_answers(60, per_answer=8))
    subject = subject_model(args.model, "cpu")
    layer = subject.n_layers // 2 if args.layer is None else args.layer
    neurons = pick_neurons(args.neurons, subject.d_mlp, args.seed)
    results_dir = tempfile.mkdtemp(prefix="bench-hypotheses-")
    load_before = machine()
    rows = []
    for neuron in neurons:
        on = _arm(args, llm, layer, neuron, args.explain_every, args.llm_calls, results_dir)
        # A hypothesis near the end can take the 'on' arm a few calls past the budget: the 'off'
        # arm gets exactly as many, one proposal a call.
        off = _arm(args, llm, layer, neuron, 0, on["calls"], results_dir)
        rows.append((neuron, off, on))

    print(
        f"model {args.model}, layer {layer}, neurons {neurons} (seed {args.seed}), budget {args.llm_calls} LLM calls a run, "
        f"'on' = --explain-every {args.explain_every}, LLM {'embedded SmolLM2-135M-Instruct' if llm == 'embedded' else llm}\n"
        f"machine before: {load_before}\nmachine after:  {machine()}\n"
    )
    print("| neuron | best off | best on | on / off | LLM calls off / on (of them hypotheses) | measured off / on | last hypothesis (generation AUROC) | minutes off / on |")
    print("|---:|---:|---:|---:|---|---|---|---|")
    for neuron, off, on in rows:
        last = on["last"]
        auroc = (last or {}).get("generation") or {}
        said = f"{last['explanation'][:70]!r} ({auroc['auroc']:.2f})" if last and auroc.get("auroc") is not None else (repr(last["explanation"][:70]) if last else "–")
        print(
            f"| {neuron} | {off['best']:.3f} | {on['best']:.3f} | {on['best'] / off['best']:.2f}x | {off['calls']} / {on['calls']} ({on['hypothesis_calls']}) "
            f"| {off['measured']} / {on['measured']} | {said} | {off['minutes']:.1f} / {on['minutes']:.1f} |"
        )
    wins = sum(on["best"] > off["best"] for _, off, on in rows)
    ratios = [on["best"] / off["best"] for _, off, on in rows if off["best"] > 0]
    median = f"{statistics.median(ratios):.2f}x" if ratios else "–"
    print(f"\nwith hypotheses: higher best on {wins} of {len(rows)} neurons; median best on / off {median}")


if __name__ == "__main__":
    main()

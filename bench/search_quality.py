"""Search quality at a fixed budget of measured prompts: random fallback prompts vs the original loop vs this tool.

    python bench/search_quality.py [--neurons 5] [--prompts 1000] [--layer MIDDLE] [--smoke]

On the bundled Gemma 3 270M, `--neurons` neurons of a middle layer are drawn with a fixed seed. For
each, with the same budget of measured prompts (the 28 built-in seeds, measured first by all three,
count in it):
  (a) random: batches of 8 from the fallback generator alone (random tokens, word mixes, and
      mutations of its own top 10), exact repeats skipped;
  (b) original: the original loop (bench/original_loop.py), one prompt per LLM call;
  (c) this tool at its defaults (NeuronSearch, max_prompts = the budget; mutations of the top
      prompts fill LLM batches that come back short).
(b) and (c) use the embedded SmolLM2-135M-Instruct. All reduce a prompt by `max` over its tokens.
The table gives each method's best activation and how many measured prompts it needed to reach
(a)'s final best ("-": never, within the budget).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import common  # noqa: F401 (sets up the import path and offline settings)
from common import best_curve, machine, measured_by_source, pick_neurons, prompts_to_reach, tiny_model_dir
from original_loop import OriginalLoop

from neuron_search.api import NeuronSearch
from neuron_search.services.search.prompt_index import load_embedder
from neuron_search.services.search.random_prompts import random_prompts
from neuron_search.services.runtime import subject_model
from neuron_search.services.search.seeds import BUILTIN_SEEDS


def random_search(subject, layer: int, neuron: int, budget: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    seen: set[str] = set()
    measured: list[tuple[float, str]] = []
    batch = list(BUILTIN_SEEDS)
    while len(measured) < budget:
        batch = [p for p in dict.fromkeys(subject.truncate(p, 64) for p in batch) if p.strip() and p.strip() not in seen]
        seen.update(p.strip() for p in batch)
        for m in subject.measure(batch[: budget - len(measured)], layer, neuron, "max", batch_size=8):
            if not m["error"]:
                measured.append((m["activation"], m["prompt"]))
        tops = [p for _, p in sorted(measured, reverse=True)[:10]]
        batch = random_prompts(rng, 8, subject.vocabulary, tops)
    return best_curve([{"activation": a} for a, _ in measured], budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--neurons", type=int, default=5, help="how many neurons to draw")
    parser.add_argument("--layer", type=int, default=None, help="default: the middle layer (n_layers // 2)")
    parser.add_argument("--prompts", type=int, default=1000, help="measured prompts per method and neuron")
    parser.add_argument("--seed", type=int, default=0, help="draws the neurons; seeds every method")
    parser.add_argument("--methods", default="random,original,tool")
    parser.add_argument("--smoke", action="store_true", help="the tiny test model and a scripted LLM, a few seconds")
    args = parser.parse_args()
    llm = "embedded"
    if args.smoke:
        from neuron_search.testing.helpers import fresh_answers, scripted

        args.model, args.neurons, args.prompts = tiny_model_dir(), 1, 40
        llm = scripted(fresh_answers(200, per_answer=8))
    methods = args.methods.split(",")

    from neuron_search.services.llm.proposer import chat_model

    subject = subject_model(args.model, "cpu")
    layer = subject.n_layers // 2 if args.layer is None else args.layer
    neurons = pick_neurons(args.neurons, subject.d_mlp, args.seed)
    embed = load_embedder("all-MiniLM-L6-v2", "cpu")
    results_dir = tempfile.mkdtemp(prefix="bench-quality-")
    load_before = machine()
    rows = []
    for neuron in neurons:
        row = {"neuron": neuron}
        if "random" in methods:
            started = time.perf_counter()
            row["random"] = random_search(subject, layer, neuron, args.prompts, args.seed)
            row["random_min"] = (time.perf_counter() - started) / 60
        if "original" in methods:
            started = time.perf_counter()
            loop = OriginalLoop(subject=subject, chat_model=chat_model(llm, 0.7, args.seed), embed=embed, layer=layer, neuron=neuron, seed=args.seed)
            loop.measure_seeds()
            loop.run(max_prompts=args.prompts, max_llm_calls=4 * args.prompts)
            row["original"] = [best for _, best in loop.curve][: args.prompts]
            row["original_calls"] = loop.llm_calls
            row["original_min"] = (time.perf_counter() - started) / 60
        if "tool" in methods:
            started = time.perf_counter()
            result = NeuronSearch(
                model=args.model, layer=layer, neuron=neuron, llm=llm, strategy="llm", device="cpu", seed=args.seed,
                results_dir=results_dir, run_id=f"tool-{neuron}", explain=False,
            ).run(progress=False, iterations=10**6, max_prompts=args.prompts)
            row["tool"] = best_curve(result.records, args.prompts)
            row["tool_calls"] = result.stats["llm_calls"]
            row["tool_sources"] = measured_by_source(result.records)
            row["tool_min"] = (time.perf_counter() - started) / 60
        rows.append(row)

    print(
        f"model {args.model}, layer {layer}, neurons {neurons} (seed {args.seed}), budget {args.prompts} measured prompts per method "
        f"(28 seeds included), LLM {'embedded SmolLM2-135M-Instruct' if llm == 'embedded' else llm}\n"
        f"machine before: {load_before}\nmachine after:  {machine()}\n"
    )
    present = [m for m in ("random", "original", "tool") if m in methods]
    header = ["neuron"] + [f"{m}: best" for m in present]
    if "random" in present:
        header += [f"{m}: prompts to reach random's best" for m in present]
    header += [f"{m}: measured / LLM calls / minutes" for m in present]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    sources_lines: list[str] = []
    for row in rows:
        cells = [str(row["neuron"])] + [f"{row[m][-1]:.3f}" for m in present]
        if "random" in present:
            level = row["random"][-1]
            cells += [str(prompts_to_reach(row[m], level) or "-") for m in present]
        cells += [f"{len(row[m])} / {row.get(m + '_calls', 0)} / {row[m + '_min']:.1f}" for m in present]
        print("| " + " | ".join(cells) + " |")
        if "tool_sources" in row:
            sources_lines.append(f"neuron {row['neuron']}: " + ", ".join(f"{n} {s}" for s, n in row["tool_sources"].items()))
    median = ["**median**"] + [f"**{statistics.median(r[m][-1] for r in rows):.3f}**" for m in present]
    if "random" in present:
        for m in present:
            reached = [prompts_to_reach(r[m], r["random"][-1]) for r in rows]
            hits = [x for x in reached if x is not None]
            median.append(f"{statistics.median(hits):.0f} ({len(hits)}/{len(rows)} reached)" if hits else f"- (0/{len(rows)})")
    median += [""] * len(present)
    print("| " + " | ".join(median) + " |")
    if sources_lines:
        print("\nThis tool's measured prompts after the seeds, by who wrote them: " + "; ".join(sources_lines))


if __name__ == "__main__":
    main()

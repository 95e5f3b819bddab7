"""What a gradient run's measurement costs: the neuron and the cross-entropy from one forward pass
run on to the logits (what measure_activation does), against the two passes it replaced (one to
the neuron's layer, one full pass for the cross-entropy), and the neuron alone.

    python bench/fluency_cost.py [--prompts 64] [--repeats 3] [--smoke]

Side by side in one run, interleaved per repeat, on the bundled Gemma 3 270M at layer 9, with
prompts of the kind a gradient run measures (12-24 tokens).
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401 (sets up the import path and offline settings)
from common import corpus, machine, tiny_model_dir

from neuron_search.services.runtime import subject_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="the search's default --batch-size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, a few prompts")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.layer, args.prompts, args.repeats = tiny_model_dir(), 1, 8, 1
    subject = subject_model(args.model, "cpu")
    prompts = corpus(args.prompts, subject.vocabulary)
    rows = [subject.token_ids(p) for p in prompts]

    def neuron_only() -> None:
        subject.measure(prompts, args.layer, 0, batch_size=args.batch_size)

    def two_passes() -> None:
        subject.measure(prompts, args.layer, 0, batch_size=args.batch_size)
        subject.cross_entropy(rows, batch_size=args.batch_size)

    def one_pass() -> None:
        subject.measure(prompts, args.layer, 0, batch_size=args.batch_size, fluency=True)

    ways = {"neuron only (pass to the layer)": neuron_only, "neuron + xent, two passes (before)": two_passes, "neuron + xent, one pass (now)": one_pass}
    times: dict[str, list[float]] = {name: [] for name in ways}
    one_pass()  # warm-up
    for _ in range(args.repeats):
        for name, way in ways.items():
            started = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - started)
    print(f"model {args.model}, layer {args.layer}, {args.prompts} prompts, batch {args.batch_size}, median of {args.repeats}")
    print(f"machine: {machine()}\n")
    print("| measurement | prompts/s | x two passes |")
    print("|---|---:|---:|")
    before = statistics.median(times["neuron + xent, two passes (before)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {args.prompts / median:.1f} | {before / median:.2f} |")


if __name__ == "__main__":
    main()

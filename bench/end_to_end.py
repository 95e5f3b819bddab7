"""End-to-end prompts measured per minute, and LLM calls per measured prompt: this tool vs the original loop.

    python bench/end_to_end.py [--seconds 120] [--rounds 2] [--layer 9 --neuron 840] [--smoke]

Both use the same LLM (the embedded SmolLM2-135M-Instruct through llama.cpp, offline, temperature
0.7), the same subject model (the bundled Gemma 3 270M), the same embedder and the same built-in
seed prompts. This tool runs at its defaults (NeuronSearch: batch 8, mutations fill short LLM batches,
similarity threshold 1.0, patience 100);
the original loop is bench/original_loop.py (one prompt per LLM call, filtered against every stored
prompt in a Python loop, measured alone with run_with_cache). The methods take turns for `--seconds`
each, `--rounds` times, in one process: each round starts a fresh run of this tool and continues
the original loop. Seed prompts are measured before the clock starts, for both.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import common  # noqa: F401 (sets up the import path and offline settings)
from common import Recorder, machine, measured_by_source, tiny_model_dir
from original_loop import OriginalLoop

from neuron_search.api import NeuronSearch
from neuron_search.services.llm.embedded_llm import embedded_chat_model
from neuron_search.services.search.prompt_index import load_embedder
from neuron_search.services.runtime import subject_model


def scripted_llm() -> str:
    """For --smoke: an instant proposer (the real LLM would take minutes)."""
    from neuron_search.testing.helpers import fresh_answers, scripted

    return scripted(fresh_answers(400, per_answer=8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--neuron", type=int, default=840)
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds per method per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="the tiny test model and a scripted LLM, a few seconds")
    args = parser.parse_args()
    llm = "embedded"
    if args.smoke:
        args.model, args.layer, args.neuron, args.seconds, args.rounds = tiny_model_dir(), 1, 3, 2.0, 1
        llm = scripted_llm()

    from neuron_search.services.llm.proposer import chat_model

    subject = subject_model(args.model, "cpu")
    original = OriginalLoop(
        subject=subject,
        chat_model=embedded_chat_model(temperature=0.7, seed=0) if llm == "embedded" else chat_model(llm, 0.7, 0),
        embed=load_embedder("all-MiniLM-L6-v2", "cpu"),
        layer=args.layer,
        neuron=args.neuron,
    )
    original.measure_seeds()
    results_dir = tempfile.mkdtemp(prefix="bench-e2e-")
    sources = ("llm", "mutation", "fallback")
    totals = {name: {"measured": 0, "llm_calls": 0, "seconds": 0.0, **dict.fromkeys(sources, 0)} for name in ("tool", "original")}
    load_before = machine()
    for round_ in range(args.rounds):
        recorder = Recorder()
        search = NeuronSearch(
            model=args.model, layer=args.layer, neuron=args.neuron, llm=llm, strategy="llm", device="cpu",
            results_dir=results_dir, run_id=f"round-{round_}", explain=False,
        )
        # time_limit counts from the start of the seed batch; the rate is taken after it.
        result = search.run(progress=recorder, iterations=10**6, time_limit=args.seconds + 5)
        (t0, s0, _), (t1, s1, _) = recorder.points[0], recorder.points[-1]
        tool = totals["tool"]
        for source, count in measured_by_source(result.records).items():
            tool[source] += count
        tool["measured"] += s1["measured"] - s0["measured"]
        tool["llm_calls"] += s1["llm_calls"] - s0["llm_calls"]
        tool["seconds"] += t1 - t0

        measured, calls, started = original.measured, original.llm_calls, time.perf_counter()
        original.run(seconds=args.seconds)
        orig = totals["original"]
        orig["measured"] += original.measured - measured
        orig["llm_calls"] += original.llm_calls - calls
        orig["seconds"] += time.perf_counter() - started
        orig["llm"] += original.measured - measured

    print(
        f"model {args.model}, layer {args.layer}, neuron {args.neuron}, LLM {'embedded SmolLM2-135M-Instruct' if llm == 'embedded' else llm}; "
        f"{args.rounds} rounds of {args.seconds:g} s per method, taking turns\n"
        f"machine before: {load_before}\nmachine after:  {machine()}\n"
    )
    print("| method | measured prompts | LLM calls | minutes | prompts / minute | LLM calls / measured prompt | written by the LLM / mutations / fallback |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rate = {}
    for name, label in (("tool", "this tool (defaults: batch 8, fill mutations)"), ("original", "original loop (1 prompt / call)")):
        t = totals[name]
        rate[name] = t["measured"] / (t["seconds"] / 60) if t["seconds"] else 0.0
        per_prompt = t["llm_calls"] / t["measured"] if t["measured"] else float("nan")
        print(
            f"| {label} | {t['measured']} | {t['llm_calls']} | {t['seconds'] / 60:.1f} | {rate[name]:.1f} "
            f"| {per_prompt:.2f} | {t['llm']} / {t['mutation']} / {t['fallback']} |"
        )
    ratio = rate["tool"] / rate["original"] if rate["original"] else float("inf")
    print(f"\nthis tool / original loop, prompts per minute: {ratio:.1f}x")


if __name__ == "__main__":
    main()

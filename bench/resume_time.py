"""How long resuming a long run takes before its first filter decision, at similarity threshold 1.0 and 0.5.

    python bench/resume_time.py [--prompts 50000] [--thresholds 1.0,0.5] [--smoke]

A synthetic run's record store is written directly: `--prompts` measured prompts of 5-10 random
words from the bundled MiniLM's vocabulary, with per-token activations as the tool stores them
(random values; the prompt's activation is their max), 8 to an iteration. The subject model is the
tests' tiny random GPT-2. Each threshold is timed in a new process, as a resume is: the subject
model is loaded first (not timed), then the timer covers opening the run's services the way a
resume does (`services_for`: the record store and the semantic index rebuilt from it, with the
embedder as the tool loads it) and the first filter check of one fresh prompt, which is when a
threshold below 1.0 needs every stored prompt embedded.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine, tiny_model_dir

RUN_ID = "resume"
BATCH = 8


def write_store(folder: Path, prompts: int, seed: int = 0) -> None:
    """A record store of `prompts` measured prompts, all distinct, as the tool writes them."""
    from memory import word_list

    from neuron_search.services.storage.record_store import RecordStore

    words = word_list()
    rng = random.Random(seed)
    store = RecordStore(folder / "records.sqlite")
    seen: set[str] = set()
    iteration = 0
    while len(seen) < prompts:
        batch = []
        while len(batch) < min(BATCH, prompts - len(seen)):
            tokens = rng.choices(words, k=rng.randint(5, 10))
            prompt = " ".join(tokens)
            if prompt in seen:
                continue
            seen.add(prompt)
            values = [rng.gauss(0.0, 1.0) for _ in tokens]
            peak = max(range(len(values)), key=values.__getitem__)
            batch.append(dict(prompt=prompt, activation=values[peak], tokens=tokens, values=values, peak=peak, error=""))
        store.append(iteration, ["llm"] * len(batch), batch)
        iteration += 1
    store.close()


def measure(model: str, results_dir: str, threshold: float) -> dict:
    """In this process: load the subject model, then time the resume up to its first filter decision."""
    from neuron_search.context import SearchContext
    from neuron_search.services.runtime import release_run, services_for, subject_model

    ctx = SearchContext(
        model=model, layer=1, neuron=3, device="cpu", results_dir=results_dir, run_id=RUN_ID, similarity_threshold=threshold
    )
    subject_model(ctx.model, ctx.device)
    started = time.perf_counter()
    services = services_for(ctx, RUN_ID)
    opened = time.perf_counter()
    buckets = frozenset(ctx.filter_buckets.split(","))
    (verdict,) = services.index.check(["a fresh prompt never stored"], threshold, buckets, ctx.low_percentile, ctx.high_percentile)
    checked = time.perf_counter()
    release_run(ctx, RUN_ID)
    return {
        "threshold": threshold,
        "open_s": opened - started,
        "first_check_s": checked - started,
        "verdict": verdict.status,
        # sentence-transformers is imported only to load the embedder.
        "embedder_loaded": "sentence_transformers" in sys.modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=50_000, help="measured prompts in the run's record store")
    parser.add_argument("--thresholds", default="1.0,0.5", help="similarity thresholds to resume at, one process each")
    parser.add_argument("--smoke", action="store_true", help="200 prompts, a few seconds")
    parser.add_argument("--measure", type=float, help=argparse.SUPPRESS)  # the child process: one threshold
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--results-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.model, args.results_dir, args.measure)))
        return
    if args.smoke:
        args.prompts = 200

    model = tiny_model_dir()
    results_dir = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    started = time.perf_counter()
    write_store(results_dir / RUN_ID, args.prompts)
    written_s = time.perf_counter() - started
    load_before = machine()
    rows = []
    for threshold in [float(t) for t in args.thresholds.split(",")]:
        child = [sys.executable, __file__, "--measure", str(threshold), "--model", model, "--results-dir", str(results_dir)]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(
        f"tiny GPT-2 fixture, synthetic record store of {args.prompts:,} measured prompts (written in {written_s:.0f} s), "
        f"embedder all-MiniLM-L6-v2 on the CPU\nmachine before: {load_before}\nmachine after:  {machine()}\n"
    )
    print("| stored prompts | threshold | open the run's services (s) | open + first filter check (s) | embedder loaded | verdict |")
    print("|---:|---:|---:|---:|---|---|")
    for row in rows:
        print(
            f"| {args.prompts:,} | {row['threshold']:g} | {row['open_s']:.2f} | {row['first_check_s']:.2f} "
            f"| {'yes' if row['embedder_loaded'] else 'no'} | {row['verdict']} |"
        )


if __name__ == "__main__":
    main()

"""Two searches measuring at once in one process: are their numbers right, and what does it cost?

    python bench/concurrency.py [--model embedded] [--prompts 96] [--batch-size 8] [--repeats 3] [--smoke]

Two jobs share one SubjectModel, as two Studio runs or two notebook threads share the cached model:
job A measures its prompts at layer 9 neuron 129, job B other prompts at layer 5 neuron 700 (the
cases of issue #11; on --smoke's 2-layer model, layers 1 and 0). Each round measures
  (1) A alone, then B alone, one after the other, on one thread;
  (2) A and B at the same time, on two threads;
  (3) A alone, and A alone with the model's lock replaced by a no-op, for the lock's own cost
      (single thread, so the numbers stay right);
and counts, for (2), the activations that differ from (1) by more than 1e-6 and the prompts that
failed. Throughput is prompts per second (of both jobs, or of job A); each cell is the median over
rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time

import common  # noqa: F401 (sets up the import path and offline settings)
from common import corpus, machine, tiny_model_dir

from neuron_search.services.model.subject_model import SubjectModel


def measure_all(subject: SubjectModel, prompts: list[str], layer: int, neuron: int, batch_size: int) -> list[dict]:
    out = []
    for start in range(0, len(prompts), batch_size):  # one call per batch, as measure_activation makes
        out += subject.measure(prompts[start : start + batch_size], layer, neuron, batch_size=batch_size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=96, help="Prompts per job.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="The tests' tiny model, few prompts, one round.")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.prompts, args.repeats = tiny_model_dir(), 16, 1
    subject = SubjectModel.load(args.model, "cpu")
    layers = (9, 5) if subject.n_layers > 9 else (subject.n_layers - 1, 0)
    neurons = (129 % subject.d_mlp, 700 % subject.d_mlp)
    prompts = corpus(2 * args.prompts, subject.vocabulary)
    jobs = [(prompts[: args.prompts], layers[0], neurons[0]), (prompts[args.prompts :], layers[1], neurons[1])]
    n = 2 * args.prompts

    times: dict[str, list[float]] = {"A then B, one thread": [], "A and B, two threads at once": [], "A alone": [], "A alone, lock off": []}
    wrong = failed = 0
    for _ in range(args.repeats):
        started = time.perf_counter()
        alone = [measure_all(subject, p, layer, neuron, args.batch_size) for p, layer, neuron in jobs]
        times["A then B, one thread"].append(time.perf_counter() - started)

        together: list[list[dict]] = [[], []]
        barrier = threading.Barrier(2)

        def job(i: int) -> None:
            barrier.wait()
            together[i] = measure_all(subject, *jobs[i], args.batch_size)

        threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        times["A and B, two threads at once"].append(time.perf_counter() - started)
        for got, want in zip(together, alone):
            failed += sum(bool(m["error"]) for m in got)
            wrong += sum(abs(g["activation"] - w["activation"]) > 1e-6 for g, w in zip(got, want) if not g["error"])

        started = time.perf_counter()
        measure_all(subject, *jobs[0], args.batch_size)
        times["A alone"].append(time.perf_counter() - started)
        lock, subject.exclusive = subject.exclusive, contextlib.nullcontext()
        try:
            started = time.perf_counter()
            measure_all(subject, *jobs[0], args.batch_size)
            times["A alone, lock off"].append(time.perf_counter() - started)
        finally:
            subject.exclusive = lock

    print(f"# Concurrency: {args.model}, {n} prompts over two jobs, batch {args.batch_size}, {args.repeats} rounds")
    print(f"# {machine()}")
    print("| way | prompts | prompts/s | wrong activations | failed |")
    print("|---|---:|---:|---:|---:|")
    for way, seconds in times.items():
        count = n if "B" in way else args.prompts
        checked = f"{wrong} of {n * args.repeats} | {failed}" if "at once" in way else "- | -"
        print(f"| {way} | {count} | {count / statistics.median(seconds):.1f} | {checked} |")


if __name__ == "__main__":
    main()

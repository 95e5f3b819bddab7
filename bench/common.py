"""What the benchmarks share: offline settings, the prompt corpus, the smoke-test model, the machine line.

Not a benchmark itself.
"""

from __future__ import annotations

import csv
import os
import platform
import random
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANGSMITH_TRACING", "false")


def tiny_model_dir(folder: str = "") -> str:
    """The tests' 2-layer random GPT-2 (the same weights every time), built in folder or else in a
    temporary one (for --smoke runs)."""
    from neuron_search.testing.tiny_model import build_tiny_gpt2

    return str(build_tiny_gpt2(Path(folder or tempfile.mkdtemp(prefix="bench-tiny-gpt2-"))))


def subject_folder(model: str) -> str:
    """The folder a subject model name boots from (for loading the same weights with plain transformers)."""
    if model == "embedded":
        from neuron_search.services.model.bundled import embedded_subject_folder

        return str(embedded_subject_folder())
    return model


def corpus(n: int, vocabulary, seed: int = 0) -> list[str]:
    """n varied prompts: the built-in seeds, then fallback-generator prompts (fixed seed)."""
    from neuron_search.services.search.random_prompts import random_prompts
    from neuron_search.services.search.seeds import BUILTIN_SEEDS

    prompts = list(BUILTIN_SEEDS)[:n]
    rng = random.Random(seed)
    while len(prompts) < n:
        prompts += random_prompts(rng, min(32, n - len(prompts)), vocabulary, prompts[:10])
    return prompts


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.processor() or platform.machine()}, {cores} cores, load average {load} (1/5/15 min)"


def rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Recorder:
    """A NeuronSearch progress object that keeps (seconds, stats, best) after every iteration."""

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self.points: list[tuple[float, dict, float | None]] = []

    def update(self, state, context) -> None:  # noqa: ARG002 (the progress protocol)
        best = state.get("best")
        self.points.append((self._clock(), dict(state["stats"]), best["activation"] if best else None))

    def close(self) -> None:
        pass


def read_records(folder: Path) -> list[dict]:
    """The rows of a run folder's records.csv, as text, in the order they were measured."""
    with open(folder / "records.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def lead_iterations(rows: Iterable[dict]) -> Iterator[tuple[dict | None, list[dict]]]:
    """Each iteration's measured (error-free) rows of a run's records.csv, in order, with the lead they
    were proposed from: the best row measured before the iteration (None for the first)."""
    by_iteration: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        if not row["error"]:
            by_iteration[int(row["iteration"])].append(row)
    best: dict | None = None
    for iteration in sorted(by_iteration):
        measured = by_iteration[iteration]
        yield best, measured
        for row in measured:
            if best is None or float(row["activation"]) > float(best["activation"]):
                best = row


def best_curve(records, budget: int | None = None) -> list[float]:
    """The best activation after each measured prompt, in the order they were measured."""
    curve, best = [], float("-inf")
    for r in records:
        if r["activation"] is None:
            continue
        best = max(best, r["activation"])
        curve.append(best)
    return curve[:budget] if budget else curve


def measured_by_source(records) -> dict[str, int]:
    """How many measured prompts the LLM, the mutations and the fallback each wrote (seeds and failed prompts left out)."""
    sources = [r["source"] for r in records if r["activation"] is not None]
    return {source: sources.count(source) for source in ("llm", "mutation", "fallback")}


def device_name(device: str) -> str:
    """The GPU's name for a cuda device, else the device in capitals (CPU, MPS)."""
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else device.upper()


def prompts_to_reach(curve: list[float], level: float) -> int | None:
    """How many measured prompts a curve needed to reach `level` (None: never)."""
    return next((i + 1 for i, best in enumerate(curve) if best >= level - 1e-9), None)


def pick_neurons(count: int, d_mlp: int, seed: int = 0) -> list[int]:
    """`count` neurons drawn at random with a fixed seed (sections 5 and 6 use the same ones)."""
    return sorted(random.Random(seed).sample(range(d_mlp), count))

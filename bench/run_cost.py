"""What the README's first command costs: wall time and peak resident memory of `run.py` searches.

    python bench/run_cost.py [--neurons 165,1060] [--max-prompts 2000] [--threads 0] [--results-dir DIR]

Each neuron is searched by `python run.py --model embedded --layer 9 --neuron N --max-prompts M
--no-explain` in a process of its own (the default strategy, seeds and settings as shipped; the
explanation, a separate cost, left out), one after the other. Before the first, one `run.py
exemplars` call caches the layer's corpus scan, so no search pays for it. Printed per neuron: the
search's wall time (the process's, model load included), its peak resident memory (the child's
maximum RSS as the kernel counts it, `wait4`), the prompts it measured, and its best activation
from results.json; then the bundled model's weights for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (sets up the import path and offline settings)
from common import ROOT, machine


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one `run.py` process."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"run.py {' '.join(args)} failed ({child.returncode}): {child.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", default="165,1060")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--max-prompts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--results-dir", default="")
    args = parser.parse_args()
    results_dir = args.results_dir or tempfile.mkdtemp(prefix="bench-run-cost-")
    neurons = [int(n) for n in args.neurons.split(",")]
    common_args = ["--model", "embedded", "--layer", str(args.layer), "--results-dir", results_dir]
    scan_seconds, _ = run(["exemplars", *common_args[:4], "--neuron", str(neurons[0])])
    before = machine()
    rows = []
    for neuron in neurons:
        run_id = f"cost-{neuron}-{time.strftime('%Y%m%d-%H%M%S')}"
        seconds, peak = run([
            *common_args, "--neuron", str(neuron), "--max-prompts", str(args.max_prompts), "--no-explain",
            "--threads", str(args.threads), "--run-id", run_id,
        ])  # fmt: skip
        results = json.loads((Path(results_dir) / run_id / "results.json").read_text())
        rows.append((neuron, seconds, peak, results["statistics"]["measured"], results["best"]["activation"]))
    from neuron_search.services.model.bundled import embedded_subject_folder

    weights = (embedded_subject_folder() / "model.safetensors").stat().st_size / 2**30
    print(f"machine before: {before}\nmachine after:  {machine()}")
    print(f"layer {args.layer}, --max-prompts {args.max_prompts}, --threads {args.threads}; corpus scan cached first ({scan_seconds:.0f} s)\n")
    print("| neuron | minutes | peak RSS (GiB) | x weights | measured | best activation |")
    print("|---:|---:|---:|---:|---:|---:|")
    for neuron, seconds, peak, measured, best in rows:
        print(f"| {neuron} | {seconds / 60:.1f} | {peak:.2f} | {peak / weights:.1f}x | {measured} | {best:.3f} |")
    print(f"\nthe bundled model's weights (model.safetensors): {weights:.2f} GiB")


if __name__ == "__main__":
    main()

"""Neurons per hour of a layer sweep: one process without Ray, local Ray with 2 workers, and shared
measurements on and off; memory per worker; prompts needed to reach a target with and without the
shared measurements.

    python bench/sweep_throughput.py [--neurons 0:16] [--max-prompts 96] [--smoke]

Each configuration is `python run.py sweep` run as a person runs it (a subprocess), side by side in
one run, on the bundled Gemma 3 270M at layer 9 with the gradient strategy (no LLM: what the
neurons cost is the subject model's work, which is what Ray spreads). The process tree is sampled
for resident memory; a Ray worker is a process named ray::SweepWorker.

Prompts to target: for each neuron, the target is the lower of its best activations with shared
measurements on and off (so both runs reach it), and a run's count is the number of prompts it had
measured when its best first reached the target (seeds included).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common  # noqa: F401 (sets up the import path and offline settings)
from common import ROOT, machine, tiny_model_dir

CONFIGURATIONS = (
    ("one process, shared on", ["--ray", "off"]),
    ("Ray local, 2 workers, shared on", ["--ray", "local", "--workers", "2"]),
    ("Ray local, 2 workers, shared off", ["--ray", "local", "--workers", "2", "--no-shared"]),
)


def sample_memory(root_pid: int, peaks: dict[str, float], stop: threading.Event) -> None:
    """Peak RSS (MiB) of the driver and of each Ray worker under `root_pid`, until `stop`."""
    import psutil

    root = psutil.Process(root_pid)
    while not stop.is_set():
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in processes:
            try:
                name = " ".join(p.cmdline())[:200]
                rss = p.memory_info().rss / 2**20
            except psutil.Error:
                continue
            key = "driver" if p.pid == root_pid else ("worker" if "SweepWorker" in name else "")
            if key == "worker":
                peaks[f"worker-{p.pid}"] = max(peaks.get(f"worker-{p.pid}", 0.0), rss)
            elif key:
                peaks[key] = max(peaks.get(key, 0.0), rss)
        stop.wait(0.5)


def prompts_to(run_dir: Path, target: float) -> int | None:
    db = sqlite3.connect(run_dir / "records.sqlite")
    try:
        rows = db.execute("SELECT activation FROM records ORDER BY iteration, slot").fetchall()
    finally:
        db.close()
    measured = 0
    for (activation,) in rows:
        if activation is None:
            continue
        measured += 1
        if activation >= target - 1e-9:
            return measured
    return None


def bests(folder: Path) -> dict[int, float]:
    db = sqlite3.connect(folder / "sweep.sqlite")
    try:
        return {n: b for n, b in db.execute("SELECT neuron, best FROM neuron_status WHERE status = 'done'")}
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--neurons", default="0:16")
    parser.add_argument("--max-prompts", type=int, default=96, help="measured prompts per neuron")
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, 2 neurons, a few prompts")
    args = parser.parse_args()
    search = ["--strategy", "gradient", "--population", "4", "--children", "4", "--no-seed-corpus", "--no-explain", "--device", "cpu"]
    configurations = CONFIGURATIONS
    if args.smoke:  # the script's own plumbing only: tests/test_sweep.py runs sweeps on Ray
        args.model, args.layer, args.neurons, args.max_prompts = tiny_model_dir(), 1, "0:2", 16
        # With --ray off the first two configurations are the same sweep: the first is left out.
        configurations = [(name, ["--ray", "off", *extra[4:]]) for name, extra in CONFIGURATIONS if "local" in extra]
    results = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    rows, folders = [], {}
    print(f"machine: {machine()}" + (" (smoke: the Ray configurations ran with --ray off)" if args.smoke else ""), flush=True)
    for name, extra in configurations:
        sweep_id = "s" + str(len(folders))
        command = [
            sys.executable, str(ROOT / "run.py"), "sweep", "--layer", str(args.layer), "--neurons", args.neurons,
            "--model", args.model, "--max-prompts", str(args.max_prompts), "--iterations", "1000",
            "--results-dir", str(results), "--sweep-id", sweep_id, "--quiet", *search, *extra,
        ]  # fmt: skip
        peaks: dict[str, float] = {}
        stop = threading.Event()
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampler = threading.Thread(target=sample_memory, args=(process.pid, peaks, stop), daemon=True)
        sampler.start()
        out, _ = process.communicate()
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        if process.returncode != 0:
            sys.exit(f"{name} failed:\n{out[-3000:]}")
        folder = results / sweep_id
        folders[name] = folder
        done = bests(folder)
        workers = [v for k, v in peaks.items() if k.startswith("worker-")]
        rows.append(
            {
                "name": name,
                "neurons": len(done),
                "seconds": seconds,
                "per_hour": len(done) / seconds * 3600,
                "driver_mb": peaks.get("driver", 0.0),
                "worker_mb": max(workers) if workers else None,
                "median_best": statistics.median(done.values()),
            }
        )
        print(f"{name}: {len(done)} neurons in {seconds:.0f} s", flush=True)

    on, off = folders["Ray local, 2 workers, shared on"], folders["Ray local, 2 workers, shared off"]
    best_on, best_off = bests(on), bests(off)
    to_target = {"on": [], "off": []}
    for neuron in sorted(set(best_on) & set(best_off)):
        target = min(best_on[neuron], best_off[neuron])
        to_target["on"].append(prompts_to(on / "neurons" / str(neuron), target))
        to_target["off"].append(prompts_to(off / "neurons" / str(neuron), target))

    base = rows[0]["per_hour"]
    print(f"\nLayer {args.layer} of {args.model}, neurons {args.neurons}, {args.max_prompts} measured prompts each, "
          f"gradient strategy (population 4, children 4). {machine()}\n")  # fmt: skip
    print("| configuration | neurons | wall (s) | neurons / hour | vs one process | median best | peak RSS: driver / per worker (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        worker = "–" if r["worker_mb"] is None else f"{r['worker_mb']:.0f}"
        print(
            f"| {r['name']} | {r['neurons']} | {r['seconds']:.0f} | {r['per_hour']:.0f} | {r['per_hour'] / base:.2f}x | "
            f"{r['median_best']:.3f} | {r['driver_mb']:.0f} / {worker} |"
        )
    print("\n| shared measurements (Ray, 2 workers) | median prompts to target | mean | neurons reaching it first |")
    print("|---|---:|---:|---:|")
    paired = [(a, b) for a, b in zip(to_target["on"], to_target["off"]) if a is not None and b is not None]
    for side, index in (("on", 0), ("off", 1)):
        counts = [pair[index] for pair in paired]
        first = sum(1 for a, b in paired if (a < b if side == "on" else b < a))
        print(f"| {side} | {statistics.median(counts):.0f} | {statistics.mean(counts):.1f} | {first} of {len(paired)} |")
    print("\n" + json.dumps({"rows": rows, "prompts_to_target": to_target}))


if __name__ == "__main__":
    main()

"""Check that the search runs on a GPU, and how fast: one short script for a machine that has one.

    python scripts/gpu_check.py [--device cuda] [--folder /tmp/gpu-check]

No downloads: it builds a randomly initialised GPT-2-small-shaped subject (12 layers, d_model 768,
d_mlp 3072, with the tests' small tokenizer) and a tiny random sentence embedder, then
  1. measures the same prompts on the CPU and on the device, at three layers, for max and last,
     and fails if any activation differs by more than 1e-3;
  2. runs a whole search on the device through NeuronSearch, with a scripted proposer standing in
     for the LLM, and prints its speed and the GPU memory it took;
  3. compares the gradient's top-k tokens on the CPU and on the device (issue 12: the same swaps
     must be proposed), and runs a whole --strategy gradient search on the device;
  4. checks that device='auto' picks the GPU;
  5. sweeps --sweep-neurons neurons of layer 6 on the device (run.py sweep, --ray off: the sweep's
     own machinery, one process), with shared measurements, and prints neurons per hour.
For the throughput table on the same model:
    python bench/measurement_throughput.py --model FOLDER/gpt2-shaped --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # scripts/ is not bench/: its shared settings and corpus

import common  # noqa: E402,F401 (offline settings)
import torch  # noqa: E402
from common import corpus, device_name  # noqa: E402
from neuron_search.testing.helpers import fresh_answers, scripted  # noqa: E402
from neuron_search.testing.tiny_model import build_tiny_embedder, build_tiny_gpt2  # noqa: E402

from neuron_search.api import NeuronSearch  # noqa: E402
from neuron_search.services.model.gradient import token_gradients  # noqa: E402
from neuron_search.services.model.subject_model import SubjectModel, resolve_device  # noqa: E402

GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
TOLERANCE = 1e-3
TOP_K = 64  # the gradient search's default --gradient-top-k


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device to check against the CPU")
    parser.add_argument("--folder", default=None, help="where the models are built (default: a temporary folder)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts compared between CPU and device")
    parser.add_argument("--iterations", type=int, default=40, help="iterations of the whole search on the device")
    parser.add_argument("--sweep-neurons", type=int, default=8, help="neurons of the sweep on the device (0: no sweep)")
    parser.add_argument("--sweep-prompts", type=int, default=200, help="measured prompts per neuron of the sweep")
    parser.add_argument("--width", type=int, default=768, help="the subject's d_model (768, GPT-2 small's; the tests check the script itself on a narrow one)")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="gpu-check-"))
    model = build_tiny_gpt2(folder / "gpt2-shaped", **{**GPT2_SMALL, "n_embd": args.width, "n_head": max(1, args.width // 64), "n_inner": 3072})
    embedder = build_tiny_embedder(folder / "embedder")
    print(f"torch {torch.__version__}, device {args.device}: {device_name(args.device)}; subject: 12 layers, d_model {args.width}, d_mlp 3072")

    # 1. The same activations on both devices.
    cpu, device = SubjectModel.load(str(model), "cpu"), SubjectModel.load(str(model), args.device)
    prompts = [cpu.truncate(p, 64) for p in corpus(args.prompts, cpu.vocabulary)]
    worst = 0.0
    for layer in (0, 6, 11):
        for position in ("max", "last"):
            a = cpu.measure(prompts, layer, 840, position, batch_size=8)
            b = device.measure(prompts, layer, 840, position, batch_size=32)
            assert [m["error"] for m in b] == [m["error"] for m in a]
            difference = max(
                max(abs(x["activation"] - y["activation"]) for x, y in zip(a, b)),
                max(abs(u - v) for x, y in zip(a, b) for u, v in zip(x["values"], y["values"])),
            )
            worst = max(worst, difference)
            print(f"layer {layer:2d} {position:4s}: largest |cpu - {args.device}| = {difference:.2e} over {len(prompts)} prompts")
    print(f"agreement: {'OK' if worst <= TOLERANCE else 'FAILED'} (largest difference {worst:.2e}, bound {TOLERANCE:g})")

    # 2. A whole search on the device.
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = NeuronSearch(
        model=str(model), layer=6, neuron=840, device=args.device, llm=scripted(fresh_answers(500, per_answer=8)), strategy="llm",
        embedder=str(embedder), results_dir=str(folder / "results"), run_id="gpu-check", patience=40,
        similarity_threshold=1.0,  # the random embedder cannot tell prompts apart: exact duplicates only
        explain=False,
    ).run(progress=False, iterations=args.iterations)
    seconds = time.perf_counter() - started
    stats = result.stats
    print(
        f"search on {args.device}: {args.iterations} iterations, {stats['measured']} prompts measured "
        f"({stats['failed']} failed) in {seconds:.1f} s = {stats['measured'] / seconds:.1f} prompts/s; "
        f"best {result.best[1]:.4f}"
    )
    if args.device.startswith("cuda"):
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")

    # 3. The gradient: the same top-k tokens on both devices, and a gradient search on the device.
    rows = [cpu.token_ids(p)[:16] for p in prompts[:8]]
    overlaps = []
    for position in ("max", "last"):
        _, grads_cpu = token_gradients(cpu, rows, 6, 840, position)
        _, grads_dev = token_gradients(device, rows, 6, 840, position)
        for a, b in zip(grads_cpu, grads_dev):
            top_a, top_b = a.float().cpu().topk(TOP_K, dim=-1).indices, b.float().cpu().topk(TOP_K, dim=-1).indices
            overlaps += [len(set(x.tolist()) & set(y.tolist())) / TOP_K for x, y in zip(top_a, top_b)]
    overlap = min(overlaps)
    print(f"gradient top-{TOP_K}: smallest CPU/{args.device} overlap over {len(overlaps)} positions = {overlap:.2f}")
    started = time.perf_counter()
    gradient = NeuronSearch(
        model=str(model), layer=6, neuron=840, device=args.device, llm=scripted(["unused"]), strategy="gradient",
        results_dir=str(folder / "results"), run_id="gpu-check-gradient", seed_corpus=False, explain=False,
    ).run(progress=False, iterations=max(args.iterations // 4, 2))
    seconds = time.perf_counter() - started
    print(
        f"gradient search on {args.device}: {gradient.stats['measured']} prompts in {seconds:.1f} s = "
        f"{gradient.stats['measured'] / seconds:.1f} prompts/s; best {gradient.best[1]:.4f}; LLM calls {gradient.stats['llm_calls']}"
    )

    # 4. auto picks the accelerator when there is one.
    print(f"device 'auto' resolves to: {resolve_device('auto')}")

    # 5. A sweep on the device: neurons per hour.
    swept = True
    if args.sweep_neurons:
        from neuron_search import run

        started = time.perf_counter()
        code = run.main([
            "sweep", "--layer", "6", "--neurons", f"0:{args.sweep_neurons}", "--model", str(model), "--device", args.device,
            "--strategy", "gradient", "--no-seed-corpus", "--no-explain", "--max-prompts", str(args.sweep_prompts), "--iterations", "1000",
            "--ray", "off", "--results-dir", str(folder / "results"), "--sweep-id", "gpu-check-sweep", "--quiet",
        ])  # fmt: skip
        seconds = time.perf_counter() - started
        swept = code == 0 and (folder / "results" / "gpu-check-sweep" / "index.html").is_file()
        print(f"sweep on {args.device}: {args.sweep_neurons} neurons x {args.sweep_prompts} prompts in {seconds:.1f} s = "
              f"{args.sweep_neurons / seconds * 3600:.0f} neurons/hour ({'OK' if swept else 'FAILED'})")  # fmt: skip
    ok = swept and worst <= TOLERANCE and stats["measured"] > 0 and stats["failed"] == 0 and overlap >= 0.9
    ok = ok and gradient.stats["measured"] > 0 and gradient.stats["llm_calls"] == 0
    print("GPU CHECK", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

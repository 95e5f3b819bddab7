"""Prompts measured per second by the subject model, against the original tool's way and a plain forward pass.

    python bench/measurement_throughput.py [--model embedded] [--device cpu] [--batch-sizes 1,8,32,64] [--smoke]

For each batch size, the same prompts (the built-in seeds, then fallback-generator prompts, cut to
64 tokens) are measured by:
  (a) the original tool's way: one prompt at a time through `run_with_cache` (every activation of
      every layer cached), whatever the batch size;
  (b) a plain transformers forward pass (AutoModelForCausalLM, the same weights, the same
      right-padded batch, no hooks, logits included), and the same without the LM head;
  this tool's `SubjectModel.measure` at the last layer (the whole model runs, the fair comparison
      with (b)), at a middle layer and at an early one (the forward pass stops after the layer).
Methods take turns within each round and rounds repeat, so load from other processes hits all of
them alike; each cell is the median over rounds. Tokenizing is inside the tool's and the
original's times and outside (b)'s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401 (sets up the import path and offline settings)
import torch
from common import corpus, device_name, machine, subject_folder, tiny_model_dir
from original_loop import original_measure

from neuron_search.services.model.subject_model import SubjectModel


def padded(subject: SubjectModel, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as the tool builds it: BOS + tokens, right-padded, with its attention mask."""
    bos = [subject.tokenizer.bos_token_id] if subject.tokenizer.bos_token_id is not None else []
    rows = [bos + subject.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), subject._pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="subject model (default: the bundled Gemma 3 270M)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps (every method runs there)")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--prompts", type=int, default=64, help="prompts timed per method and batch size (at least the batch size)")
    parser.add_argument("--original-prompts", type=int, default=16, help="prompts timed per round for the original's way")
    parser.add_argument("--layers", default="last,mid,early", help="layers the tool measures: numbers, or last/mid/early")
    parser.add_argument("--neuron", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each cell is the median over rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, tiny sizes, a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.batch_sizes, args.prompts, args.original_prompts, args.repeats = tiny_model_dir(), "1,4", 8, 4, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    from transformers import AutoModelForCausalLM

    subject = SubjectModel.load(args.model, args.device)
    hf = AutoModelForCausalLM.from_pretrained(subject_folder(args.model), dtype=torch.float32).to(subject.device).eval()

    def finish() -> None:
        """Wait for queued GPU work, so a method's time includes all of it."""
        if subject.device.startswith("cuda"):
            torch.cuda.synchronize()
    named = {"last": subject.n_layers - 1, "mid": subject.n_layers // 2, "early": min(2, subject.n_layers - 1)}
    layers = list(dict.fromkeys(named[x] if x in named else int(x) for x in args.layers.split(",")))
    prompts = [subject.truncate(p, 64) for p in corpus(max(args.prompts, max(sizes), args.original_prompts), subject.vocabulary)]

    def run_tool(layer: int, batch: list[str], bs: int) -> None:
        subject.measure(batch, layer, args.neuron, "max", batch_size=bs)

    @torch.inference_mode()
    def run_hf(tensors: list[tuple[torch.Tensor, torch.Tensor]], body: bool) -> None:
        for ids, mask in tensors:
            (hf.base_model if body else hf)(input_ids=ids.to(subject.device), attention_mask=mask.to(subject.device))

    def run_original(batch: list[str]) -> None:
        for p in batch:
            original_measure(subject, p, layers[0], args.neuron)

    # Warm-up: first calls allocate and pick kernels.
    run_tool(layers[0], prompts[:4], 4)
    run_hf([padded(subject, prompts[:4])], body=False)
    run_original(prompts[:2])

    columns = ["original (a)", "HF forward (b)", "HF no LM head"] + [f"tool L{layer}" for layer in layers]
    rates: dict[tuple[int, str], list[float]] = {}
    load_before = machine()
    for round_ in range(args.repeats):
        batch = prompts[: args.original_prompts]
        finish()
        started = time.perf_counter()
        run_original(batch)
        finish()
        rate = len(batch) / (time.perf_counter() - started)
        for bs in sizes:
            rates.setdefault((bs, "original (a)"), []).append(rate)
        for bs in sizes:
            batch = prompts[: max(args.prompts, bs)]
            tensors = [padded(subject, c) for c in chunks(batch, bs)]
            jobs = {
                "HF forward (b)": lambda: run_hf(tensors, body=False),
                "HF no LM head": lambda: run_hf(tensors, body=True),
                **{f"tool L{layer}": (lambda layer=layer: run_tool(layer, batch, bs)) for layer in layers},
            }
            names = list(jobs)
            shift = round_ % len(names)  # rotate the order, so no method always runs first
            for name in names[shift:] + names[:shift]:
                finish()
                started = time.perf_counter()
                jobs[name]()
                finish()
                rates.setdefault((bs, name), []).append(len(batch) / (time.perf_counter() - started))

    median = {key: statistics.median(values) for key, values in rates.items()}
    last = f"tool L{layers[0]}"
    print(
        f"model {args.model} ({subject.n_layers} layers, d_mlp {subject.d_mlp}), {device_name(subject.device)}, torch threads {torch.get_num_threads()}; "
        f"{args.prompts} prompts per cell ({args.original_prompts} for the original), median of {args.repeats} rounds\n"
        f"machine before: {load_before}\nmachine after:  {machine()}\n"
    )
    ratio_names = [f"{last} / (a)", f"{last} / (b)"] + [f"tool L{layer} / (b)" for layer in layers[1:]]
    print("| batch | " + " | ".join(columns + ratio_names) + " |")
    print("|" + "---:|" * (1 + len(columns) + len(ratio_names)))
    for bs in sizes:
        cells = [f"{median[(bs, c)]:.1f}" for c in columns]
        ratios = [median[(bs, last)] / median[(bs, "original (a)")], median[(bs, last)] / median[(bs, "HF forward (b)")]]
        ratios += [median[(bs, f"tool L{layer}")] / median[(bs, "HF forward (b)")] for layer in layers[1:]]
        print(f"| {bs} | " + " | ".join(cells + [f"{r:.2f}x" for r in ratios]) + " |")
    print("\nCells are prompts per second.")


if __name__ == "__main__":
    main()

"""Gradient-guided search against the neuron's best real text (issue #12's benchmark), and against
nanoGCG and a plain GCG loop (issue #33).

    python bench/gradient_quality.py [--neurons 5] [--budgets 500,2000] [--methods gradient,mixed,llm,nanogcg,gcg]
                                     [--starts shipped,best,neutral] [--peer-width 64] [--peer-top-k 64]
                                     [--set KEY=VALUE ...] [--smoke] [--results-dir DIR]

The head-to-head of issue #33:

    python bench/gradient_quality.py --budgets 500,2000 --methods gradient,nanogcg,gcg --starts best,neutral \
        --results-dir /work/exp/peers

The nanogcg method needs nanoGCG 0.3.0, which pins transformers<=4.47.1 but works with this
project's transformers 5 when installed without its dependencies (pyproject.toml says the same):

    pip install --no-deps nanogcg==0.3.0

On the bundled Gemma 3 270M, layer 9, the neurons of bench/RESULTS.md sections 5 and 6 (drawn with
seed 0). For each neuron:
  (a) the dataset max: the top snippet of `run.py exemplars` over the standard library's docstrings
      and comments (5,000 snippets of at most 64 tokens), with its cross-entropy under the model;
  and for each method, one run to the largest budget of measured prompts (seeds included), read
  at every budget from its records in the order they were measured:
  (b) `--strategy llm` (the LLM with mutations; the embedded SmolLM2),
  (c) `--strategy gradient` (no LLM),
  (d) `--strategy mixed`.
Columns: the best activation and its ratio to the dataset max, the best's cross-entropy, the best
"readable" point (the highest activation among prompts whose cross-entropy is at or below the
dataset example's; gradient and mixed runs measure every prompt's cross-entropy, llm runs none),
and the run's wall time. With --results-dir, a run already in DIR continues from its checkpoint
(the LLM runs at 2,000 prompts take longer than one sitting here) and its minutes are summed over
the sittings, less at most the one iteration a stop interrupted. Defaults as shipped otherwise
(population 8, 4 swap children and 2 edits each, a pool of the 64 best predicted swaps, one swap a
child, fluency 0.1..10).

Starts (`--starts`): `shipped`, each tool strategy seeded as it ships (the built-in seeds, and for
gradient and mixed the neuron's top real snippets); `best`, every method from one prompt, the
neuron's best real snippet (the dataset max; a tool run gets it as its only seed, no built-in seeds,
no corpus); `neutral`, every method from "The quick brown fox jumps over the lazy dog". A peer has
one start prompt: under `shipped` it starts from the best snippet.

The peers (bench/gcg_peers.py), at the same budget of measured prompts, the start being the first:
  (e) `nanogcg`: nanoGCG 0.3.0 with only its loss replaced (the neuron's activation, max over the
      prompt's tokens after BOS, through the Hugging Face model of the subject's folder, with the
      embedding scale), the tool's allowed tokens as the ones it may use;
  (f) `gcg`: a plain GCG loop with the tool's own token gradient.
Both: search width `--peer-width`, top-k `--peer-top-k`, one swap a candidate, every candidate's
activation from `SubjectModel.measure` (a candidate proposed again is not measured or counted
again). They measure no cross-entropy while searching; their readable point and the cross-entropy
of their best are computed afterwards with `SubjectModel.cross_entropy` (the tool's definition),
outside their minutes, which are the search's own (--no-peer-readable skips the readable point,
which can need ~2,000 of them, and keeps the best's). A peer's run is kept in --results-dir as JSON
and read back by a later call with the same settings.
Another column for every method: prompts to the dataset max, the measured prompts until the best
first reached the dataset max (within 1e-5 relative; "-": never within the budget). From the
`best` start the start itself is the dataset max, so it reads 1. A readable prompt "beats" the
dataset max when it is more than 1e-5 relative above it (the best snippet measured alone as a
start can read a few 1e-7 above its value in the corpus scan).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (sets up the import path and offline settings)
from common import best_curve, machine, pick_neurons, prompts_to_reach, subject_folder, tiny_model_dir
from gcg_peers import NEUTRAL_START, check_hf_activation, hf_model, nanogcg_run, plain_gcg

from neuron_search.api import STOPPED_BY_USER, NeuronSearch
from neuron_search.services.dataset.exemplars import exemplars
from neuron_search.services.runtime import subject_model


def best_at(records: list[dict], budget: int, max_xent: float | None = None) -> tuple[float, float | None]:
    """The best activation (and its cross-entropy) among the first `budget` measured prompts,
    optionally among those whose cross-entropy is at most max_xent; (nan, None) if none."""
    measured = [r for r in records if r["activation"] is not None][:budget]
    if max_xent is not None:
        measured = [r for r in measured if r["xent"] is not None and r["xent"] <= max_xent]
    if not measured:
        return float("nan"), None
    best = max(measured, key=lambda r: r["activation"])
    return best["activation"], best["xent"]


class Stopwatch:
    """A progress display that adds the seconds since its last update to a file in the run's folder
    after every iteration, so a run's wall time survives being stopped and continued."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = time.perf_counter()

    @property
    def seconds(self) -> float:
        return float(self.path.read_text()) if self.path.is_file() else 0.0

    def update(self, state: dict, context: object) -> None:
        now = time.perf_counter()
        self.path.write_text(f"{self.seconds + now - self.last:.1f}")
        self.last = now

    def close(self) -> None:
        pass


PEERS = ("nanogcg", "gcg")
STARTS = ("shipped", "best", "neutral")


def above(level: float) -> float:
    """What beats `level`: more than float rounding (1e-5 relative) above it."""
    return level + 1e-5 * max(1.0, abs(level))


def fill_xent(subject, records: list[dict], budgets: list[int], max_xent: float, batch: int = 16) -> int:
    """Give a peer's records the cross-entropies `best_at` needs (peers measure none while searching),
    as `SubjectModel.cross_entropy` of each prompt's tokens: at each budget, the best prompt's, and
    every prompt's from the highest activation down until one is at or below max_xent (so the readable
    point read from the records is exact; a max_xent of inf stops at the best's). Returns how many were
    computed. Where the peer found nothing readable but its start, that is every prompt above the start
    (a plain GCG run of neuron 1990, 61 tokens a prompt, needs about 2,000: minutes of the 262k-token
    head), so it says how far it is."""
    done = 0
    for budget in budgets:
        ranked = sorted((r for r in records[:budget] if r["activation"] is not None), key=lambda r: -r["activation"])
        at = 0
        while at < len(ranked):
            chunk = [r for r in ranked[at : at + (1 if at == 0 else batch)] if r["xent"] is None]
            if chunk:
                for r, xent in zip(chunk, subject.cross_entropy([subject.token_ids(r["prompt"]) for r in chunk])):
                    r["xent"] = xent
                if done // 200 != (done + len(chunk)) // 200:
                    print(f"  cross-entropies for the readable point: {done + len(chunk)} computed", file=sys.stderr, flush=True)
                done += len(chunk)
            if any(r["xent"] <= max_xent for r in ranked[: at + (1 if at == 0 else batch)]):
                break
            at += 1 if at == 0 else batch
    return done


def run_peer(
    method: str, subject, args, neuron: int, start: str, budgets: list[int], data_xent: float, results_dir: str, hf: list
) -> dict:
    """One peer's run to the largest budget as {records, seconds, steps, proposed, filtered, mismatched,
    stop, xents}, its records with the cross-entropies the table needs (`fill_xent`); read back from
    results_dir when a run with the same settings is there."""
    budget = budgets[-1]
    settings = {
        "method": method, "model": args.model, "layer": args.layer, "neuron": neuron, "start": start, "budget": budget,
        "width": args.peer_width, "top_k": args.peer_top_k, "seed": args.seed,
    }  # fmt: skip
    seed = f"-seed{args.seed}" if args.seed else ""  # seed 0's name is the one earlier runs saved
    path = Path(results_dir) / f"{method}-{'best' if start != NEUTRAL_START else 'neutral'}-{neuron}{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    limit = data_xent if args.peer_readable else math.inf  # inf: the best's cross-entropy alone
    if saved.get("settings") == settings:
        computed = fill_xent(subject, saved["records"], budgets, limit)
        if computed:
            saved["xents"] = saved.get("xents", 0) + computed
            path.write_text(json.dumps(saved))
        return saved
    common_args = dict(start=start, budget=budget, width=args.peer_width, top_k=args.peer_top_k, seed=args.seed)
    if method == "gcg":
        run = plain_gcg(subject, args.layer, neuron, **common_args)
    else:
        if not hf:
            hf.append(hf_model(subject_folder(args.model)))
        run = nanogcg_run(subject, hf[0], subject_folder(args.model), args.layer, neuron, **common_args)
    saved = {
        "settings": settings, "records": run.records, "seconds": run.seconds, "steps": run.steps,
        "proposed": run.proposed, "filtered": run.filtered, "mismatched": run.mismatched, "stop": run.stop,
        "xents": fill_xent(subject, run.records, budgets, limit),
    }  # fmt: skip
    path.write_text(json.dumps(saved))
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--neurons", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated neuron indices to run instead of the drawn ones")
    parser.add_argument("--budgets", default="500,2000", help="measured prompts, comma-separated")
    parser.add_argument("--methods", default="gradient,mixed,llm", help="of gradient, mixed, llm (the tool's strategies), nanogcg, gcg")
    parser.add_argument("--starts", default="shipped", help="of shipped, best, neutral (see the docstring)")
    parser.add_argument("--peer-width", type=int, default=64, help="the peers' candidates a step (search width)")
    parser.add_argument("--peer-top-k", type=int, default=64, help="the peers' top-k tokens a position")
    parser.add_argument(
        "--peer-readable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find the peers' best readable prompt (their cross-entropies, computed after the search: up to "
        "~2,000 through the model's head when a peer finds nothing readable); --no-peer-readable computes only "
        "their best's, and the table says 'not computed'",
    )
    parser.add_argument("--snippets", type=int, default=5000, help="real-text snippets scanned for the dataset max")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seed-corpus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="seed every shipped-start run with the neuron's top real snippets (default: the search's own, on for gradient and mixed)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a search setting for the tool's runs (gradient, mixed, llm), e.g. --set lead_patience=1; repeatable. "
        "A run already in --results-dir continues with its own settings, so give each variant its own folder",
    )
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, a scripted LLM, a few seconds")
    parser.add_argument(
        "--results-dir",
        default="",
        help="keep the runs here (default: a new temporary folder); a run already here continues from its checkpoint",
    )
    args = parser.parse_args()
    llm = "embedded"
    if args.smoke:
        from neuron_search.testing.helpers import fresh_answers, scripted

        # In --results-dir, so that a second smoke run continues the first's runs (same model path).
        model = tiny_model_dir(f"{args.results_dir}/tiny-gpt2" if args.results_dir else "")
        args.model, args.layer, args.neurons, args.budgets, args.snippets = model, 1, 1, "60,120", 300
        llm = scripted(fresh_answers(200, per_answer=8))
    settings = dict(kv.split("=", 1) for kv in args.set)
    corpus = ""  # the standard library's docstrings and comments
    if args.smoke:  # a few paragraphs instead: reading the standard library was most of a smoke run's time
        from neuron_search.services.search.seeds import BUILTIN_SEEDS

        corpus = str(Path(tempfile.mkdtemp(prefix="bench-corpus-")) / "corpus.txt")
        Path(corpus).write_text("\n\n".join(BUILTIN_SEEDS), encoding="utf-8")
        settings["corpus"] = corpus  # what the shipped starts' --seed-corpus reads
    budgets = sorted(int(b) for b in args.budgets.split(","))
    methods = args.methods.split(",")
    starts = args.starts.split(",")
    unknown = [m for m in methods if m not in ("gradient", "mixed", "llm", *PEERS)] + [s for s in starts if s not in STARTS]
    if unknown:
        raise SystemExit(f"Unknown method or start: {', '.join(unknown)}")
    subject = subject_model(args.model, "cpu")
    neurons = [int(n) for n in args.only.split(",")] if args.only else pick_neurons(args.neurons, subject.d_mlp, args.seed)
    results_dir = args.results_dir or tempfile.mkdtemp(prefix="bench-gradient-")
    load_before = machine()
    hf: list = []  # the HF model nanoGCG runs on, loaded once
    checks: list[str] = []

    rows = []
    for neuron in neurons:
        top = exemplars(subject, args.layer, neuron, corpus or None, top_k=1, max_snippets=args.snippets).records[0]
        (data_xent,) = subject.cross_entropy([subject.token_ids(top["prompt"])])
        row = {"neuron": neuron, "data": top["activation"], "data_xent": data_xent, "data_prompt": top["prompt"], "runs": {}}
        reach_level = top["activation"] - 1e-5 * max(1.0, abs(top["activation"]))  # reached within float rounding
        for start in starts:
            start_prompt = NEUTRAL_START if start == "neutral" else top["prompt"]
            for method in methods:
                print(f"neuron {neuron}: {method} from the {start} start, seed {args.seed}", file=sys.stderr, flush=True)
                if method in PEERS:
                    peer = run_peer(method, subject, args, neuron, start_prompt, budgets, data_xent, results_dir, hf)
                    records = peer["records"]
                    if method == "nanogcg" and not any(c.startswith(f"neuron {neuron}:") for c in checks):
                        # nanoGCG's gradient reads the neuron through the HF model: the same value as the tool's?
                        if not hf:
                            hf.append(hf_model(subject_folder(args.model)))
                        via_hf, measured = check_hf_activation(subject, hf[0], args.layer, neuron, top["prompt"])
                        if abs(via_hf - measured) > 1e-4 * max(1.0, abs(measured)):
                            raise SystemExit(f"nanoGCG's gradient reads neuron {neuron} as {via_hf}, the tool as {measured}")
                        checks.append(f"neuron {neuron}: HF {via_hf:.6f}, measure {measured:.6f}")
                    stats = {
                        "minutes": peer["seconds"] / 60, "calls": 0, "steps": peer["steps"], "proposed": peer["proposed"],
                        "filtered": peer["filtered"], "mismatched": peer["mismatched"], "stop": peer["stop"], "xents": peer.get("xents", 0),
                    }  # fmt: skip
                    best_prompt = max(records, key=lambda r: r["activation"])["prompt"]
                else:
                    run_id = f"{method}-{neuron}" if start == "shipped" else f"{method}-{start}-{neuron}"
                    seeds = (
                        {"seed_corpus": args.seed_corpus} if start == "shipped"
                        else {"seed_prompts": (start_prompt,), "builtin_seeds": False, "seed_corpus": False}
                    )  # fmt: skip
                    stopwatch = Stopwatch(Path(results_dir) / f"{run_id}.seconds")
                    result = NeuronSearch(
                        model=args.model, layer=args.layer, neuron=neuron, llm=llm, device="cpu", seed=args.seed,
                        strategy=method, results_dir=results_dir, run_id=run_id, explain=False, **seeds, **settings,
                    ).run(progress=stopwatch, iterations=10**6, max_prompts=budgets[-1])  # fmt: skip
                    if result.stop_reason == STOPPED_BY_USER:  # a table of unfinished runs would pass for the budget's
                        raise SystemExit(f"Stopped during {run_id}; run again with --results-dir {results_dir} to go on.")
                    records = result.records
                    stats = {"minutes": stopwatch.seconds / 60, "calls": result.stats["llm_calls"]}
                    best_prompt = result.best[0] if result.best else ""
                counted = method not in PEERS or args.peer_readable
                row["runs"][method, start] = {
                    **stats,
                    "best": {b: best_at(records, b) for b in budgets},
                    "readable": {b: best_at(records, b, max_xent=data_xent) if counted else None for b in budgets},
                    "reach": prompts_to_reach(best_curve(records, budgets[-1]), reach_level),
                    "measured": min(budgets[-1], sum(r["activation"] is not None for r in records)),
                    "prompt": best_prompt,
                }
        rows.append(row)

    runs = [(method, start) for start in starts for method in methods]
    print(
        f"model {args.model}, layer {args.layer}, neurons {neurons} (seed {args.seed}); dataset: top of "
        f"{args.snippets} snippets of {corpus or 'the standard library'}; budgets {budgets} measured prompts (seeds included"
        f"; --seed-corpus {({None: 'at the search default (on for gradient and mixed)', True: 'on', False: 'off'})[args.seed_corpus]}"
        f" for shipped starts); starts {starts}\n"
        f"machine before: {load_before}\nmachine after:  {machine()}"
        + (f"\ntool settings: {settings}" if settings else "")
    )
    if any(m in PEERS for m in methods):
        print(f"peers: search width {args.peer_width}, top-k {args.peer_top_k}, one swap a candidate; minutes are the search's "
              "(their cross-entropies computed afterwards)")  # fmt: skip
    if checks:
        from importlib.metadata import version

        print(f"nanoGCG {version('nanogcg')}; its gradient's activation of the dataset example against SubjectModel.measure: " + "; ".join(checks))
    print()
    print("| neuron | dataset max (xent) | method | start | " + " | ".join(f"best @{b} (x dataset)" for b in budgets)
          + f" | xent of best @{budgets[-1]} | best readable @{budgets[-1]} (x dataset) | prompts to dataset max | LLM calls | minutes |")  # fmt: skip
    print("|---:|---:|---|---|" + "---:|" * (len(budgets) + 5))
    for row in rows:
        for method, start in runs:
            m = row["runs"][method, start]
            bests = [f"{m['best'][b][0]:.3f} ({m['best'][b][0] / row['data']:.2f}x)" for b in budgets]
            xent = m["best"][budgets[-1]][1]
            readable = m["readable"][budgets[-1]]
            readable_cell = (
                "not computed" if readable is None
                else "-" if readable[0] != readable[0]
                else f"{readable[0]:.3f} ({readable[0] / row['data']:.2f}x)"
            )  # fmt: skip
            print(
                f"| {row['neuron']} | {row['data']:.3f} ({row['data_xent']:.2f}) | {method} | {start} | " + " | ".join(bests)
                + f" | {'-' if xent is None else f'{xent:.2f}'} | {readable_cell} | {m['reach'] or '-'} | {m['calls']} | {m['minutes']:.1f} |"
            )  # fmt: skip
    print()
    for method, start in runs:
        for b in budgets:
            ratios = [row["runs"][method, start]["best"][b][0] / row["data"] for row in rows]
            # Above the dataset max by more than float rounding: the best snippet itself, measured alone
            # as a start, can read a few 1e-7 above its value in the corpus scan's batch.
            points = [row["runs"][method, start]["readable"][b] for row in rows]
            readable = [p is not None and p[0] > above(row["data"]) for p, row in zip(points, rows)]
            print(
                f"{method} from {start} @{b}: median {statistics.median(ratios):.2f}x the dataset max, lowest {min(ratios):.2f}x; "
                + (f"a readable prompt beats the dataset max on {sum(readable)} of {len(rows)}" if None not in points
                   else "readable prompts not computed (--no-peer-readable)")
            )  # fmt: skip
        reached = [row["runs"][method, start]["reach"] for row in rows]
        hit = sorted(r for r in reached if r is not None)
        print(
            f"{method} from {start}: reached the dataset max on {len(hit)} of {len(rows)} within {budgets[-1]} prompts"
            + (f" (median {statistics.median(hit):g} prompts where it did)" if hit else "")
        )
    if any(m in PEERS for m in methods):
        print("\nPeers' own counts (steps; candidates scored, repeats included; dropped by the retokenization filter; "
              "kept by nanoGCG's filter but tokenized otherwise by the tool; measured; cross-entropies computed afterwards; why it stopped):")  # fmt: skip
        for row in rows:
            for method, start in runs:
                if method in PEERS:
                    m = row["runs"][method, start]
                    print(
                        f"- neuron {row['neuron']}, {method} from {start}: {m['steps']} steps, {m['proposed']} scored, "
                        f"{m['filtered']} filtered, {m['mismatched']} mismatched, {m['measured']} measured, {m['xents']} xents; {m['stop']}"
                    )
    print("\nBest prompts:")
    for row in rows:
        print(f"- neuron {row['neuron']}: dataset {row['data_prompt'][:80]!r}")
        for method, start in runs:
            print(f"  - {method} from {start}: {row['runs'][method, start]['prompt'][:80]!r}")


if __name__ == "__main__":
    main()

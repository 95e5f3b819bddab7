"""Explanations grounded in the evidence against explanations from the top prompts alone (issue 35's
benchmark).

    OMP_NUM_THREADS=1 python bench/evidence_quality.py --results-dir /work/exp/ev [--neurons 165,1060,1577,1722,1990]
    python bench/evidence_quality.py --smoke

On the bench's five neurons (bundled Gemma 3 270M, layer 9; bench/RESULTS.md sections 5 and 6), one
2,000-prompt gradient run each, in --results-dir as ev-N: a run already there is reused (e.g. copies
of bench/gradient_quality.py's `gradient-best-N` runs), else one is searched as shipped (`run.py
--neuron N --model embedded --max-prompts 2000 --no-explain`); a run without logit effects gets them
(evidence.json). For each neuron:

- themes in the top 10: how many themes (services/search/themes.py) the run's 10 best findings are;
- the held-out real text: the neuron's top real snippets (the layer's scan of the standard library)
  whose themes the grounded view did not deal to the explainer, against ordinary snippets (at or
  below the neuron's median), none of them shown to either explainer;
- the token-lookup baseline on it (services/explain/token_baseline.py; the lookup is the peak-token
  table of what the grounded explainer saw): AUROC, Pearson and Spearman;
- detection on it (the judge, given only a sentence, says which snippets fire; AUROC from its
  log-probabilities, balanced accuracy beside it) of three sentences: the grounded explanation
  (services/explain/grounded_view.py: one prompt per theme, a seed-free sample, real snippets, the
  peak-token table, the logit effects), the ungrounded one (examples.py's split: the 10 best
  findings and a sample, as before issue 35), and the control.

The same LLM (default: the embedded SmolLM2-135M) explains and judges. Each neuron's numbers are kept
in --results-dir as evidence-quality-N.json and reused (--fresh recomputes them).
"""

from __future__ import annotations

import argparse
import email
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine, tiny_model_dir

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from neuron_search.api import NeuronSearch
from neuron_search.services.dataset.corpus import run_corpus
from neuron_search.services.dataset.exemplars import real_text_holdout, seed_corpus_scan
from neuron_search.services.evidence.evidence_block import read_evidence
from neuron_search.services.evidence.run_evidence import write_run_evidence
from neuron_search.services.explain.examples import _distinct, split_examples
from neuron_search.services.explain.explainer import explain, explain_grounded
from neuron_search.services.explain.grounded_view import build_view
from neuron_search.services.explain.run_explanation import REAL_TEXT_POOL, _stored, measurer
from neuron_search.services.explain.scoring import CONTROL_EXPLANATION, detection_score
from neuron_search.services.explain.token_baseline import baseline_score
from neuron_search.services.llm.proposer import register_chat_model, resolve_llm
from neuron_search.services.runtime import subject_model
from neuron_search.services.search.themes import group_themes

NEURONS = "165,1060,1577,1722,1990"


class SmokeLLM(BaseChatModel):
    """--smoke's stand-in LLM: the explainer gets one sentence, the judge says the first half of each
    chunk fires (it reports no log-probabilities, so detection has balanced accuracy and no AUROC)."""

    @property
    def _llm_type(self) -> str:
        return "evidence-smoke"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        text = "\n".join(m.text for m in messages)
        if '{"explanation"' in text:
            answer = json.dumps({"explanation": "The neuron fires on words after a space."})
        else:
            n = text.count("Text ")
            answer = json.dumps({"fires": [i < n // 2 for i in range(n)]})
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def ensure_run(args: argparse.Namespace, neuron: int, llm: str) -> Path:
    """The neuron's finished run in --results-dir (searched now if it is not there or not finished)."""
    run_dir = Path(args.results_dir) / f"ev-{neuron}"
    if not (run_dir / "results.json").is_file():
        NeuronSearch(
            model=args.model, layer=args.layer, neuron=neuron, llm=llm, device="cpu", seed=args.seed,
            results_dir=args.results_dir, run_id=f"ev-{neuron}", explain=False, threads=1, corpus=args.corpus,
        ).run(progress=False, max_prompts=args.max_prompts, iterations=10**6)  # fmt: skip
    return run_dir


def measure_neuron(args: argparse.Namespace, neuron: int, spec: str, llm: str) -> dict[str, Any]:
    run_dir = ensure_run(args, neuron, llm)
    subject = subject_model(args.model, "cpu")
    measure = measurer(subject, args.layer, neuron, "max", 32)
    source = run_corpus(args.corpus)
    seed_corpus_scan(subject, args.layer, source=source)  # the layer's scan of the corpus: read from the cache, else made now
    real = real_text_holdout(subject, args.layer, neuron, n=REAL_TEXT_POOL, seed=args.seed, source=source)
    if real is None:
        raise SystemExit(f"The layer's scan is not cached: run `run.py exemplars --model {args.model} --layer {args.layer}` first.")
    real_high = sorted(measure.records(real[0]), key=lambda r: -r["activation"])
    real_low = measure.records(real[1])
    records = _stored(run_dir)
    themes_top10 = len(group_themes(_distinct(records)[:10]))
    view = build_view(records, real_high, real_low, seed=args.seed)
    ungrounded, _, _ = split_examples(records, seed=args.seed)
    seen = {r["prompt"] for r in ungrounded} | {r["prompt"] for r in view.shown}
    high = [r for r in view.real_high if r["prompt"] not in seen]
    low = [r for r in view.real_low if r["prompt"] not in seen]
    if not read_evidence(run_dir).get("logit_effects"):  # a run from before evidence.json: its logit effects now
        write_run_evidence(run_dir, subject, args.layer, neuron)
    effects = read_evidence(run_dir).get("logit_effects")
    started = time.perf_counter()
    scale_g = max(r["activation"] for r in view.shown) or 1.0
    scale_u = max(r["activation"] for r in ungrounded) or 1.0
    sentences = {
        "grounded": explain_grounded(spec, view, effects, scale_g, seed=args.seed),
        "ungrounded": explain(spec, ungrounded, scale_u, seed=args.seed),
        "control": CONTROL_EXPLANATION,
    }
    detection = {
        name: detection_score(spec, text, [r["prompt"] for r in high], [r["prompt"] for r in low], seed=args.seed) if text else None
        for name, text in sentences.items()
    }
    baseline = baseline_score(view.table, high, low)
    for score in detection.values():
        if score:
            score.pop("examples")
    baseline.pop("examples")
    return {
        "neuron": neuron,
        "measured": sum(r["activation"] is not None for r in records),
        "themes_top10": themes_top10,
        "themes_shown": len(view.themes),
        "real_shown": len(view.real_shown),
        "n_high": len(high),
        "n_low": len(low),
        "logit_effects": bool(effects and effects.get("promoted")),
        "sentences": sentences,
        "detection": detection,
        "token_baseline": baseline,
        "llm_seconds": round(time.perf_counter() - started, 1),
    }


def auroc_of(row: dict[str, Any], name: str) -> float | None:
    score = row["detection"].get(name)
    return None if not score else score["auroc"]


def cell(row: dict[str, Any], name: str) -> str:
    score = row["detection"].get(name)
    if not score:
        return "– (no sentence)"
    return f"{_num(score['auroc'])} (BA {_num(score['balanced_accuracy'])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", default=NEURONS)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--max-prompts", type=int, default=2000)
    parser.add_argument("--llm", default="embedded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", default="", help="the searches' and the held-out real text's corpus, as run.py's --corpus (default: the standard library)")
    parser.add_argument("--results-dir", default="", help="where the runs and each neuron's numbers are kept (default: a new temporary folder)")
    parser.add_argument("--fresh", action="store_true", help="recompute the numbers of neurons already measured here")
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, a 120-prompt run, a scripted LLM, the email package's text as the corpus")
    parser.add_argument("--kept-only", action="store_true", help="print the table of the neurons already measured in --results-dir; measure none")
    args = parser.parse_args()
    llm = args.llm
    if args.smoke:
        args.results_dir = args.results_dir or tempfile.mkdtemp(prefix="bench-evidence-")
        os.environ.setdefault("NEURON_SEARCH_CACHE", str(Path(args.results_dir) / "cache"))
        args.model, args.layer, args.neurons, args.max_prompts = tiny_model_dir(f"{args.results_dir}/tiny-gpt2"), 1, "3", 120
        # One standard-library package's docstrings and comments (726 texts) instead of the whole library,
        # whose reading was a third of a smoke run.
        args.corpus = args.corpus or str(Path(email.__file__).parent)
        llm = register_chat_model(SmokeLLM())
    args.results_dir = args.results_dir or tempfile.mkdtemp(prefix="bench-evidence-")
    spec = resolve_llm(llm)
    print(f"model {args.model}, layer {args.layer}, neurons {args.neurons}, {args.max_prompts}-prompt gradient runs (seed {args.seed}), "
          f"LLM {spec}; results {args.results_dir}\nmachine before: {machine()}")  # fmt: skip
    rows = []
    for neuron in (int(n) for n in args.neurons.split(",")):
        kept = Path(args.results_dir) / f"evidence-quality-{neuron}.json"
        if kept.is_file() and not args.fresh:
            row = json.loads(kept.read_text())
        elif args.kept_only:
            print(f"neuron {neuron}: not measured in {args.results_dir} yet")
            continue
        else:
            row = measure_neuron(args, neuron, spec, llm)
            kept.write_text(json.dumps(row, indent=2))
        rows.append(row)
    print()
    print("| neuron | themes in top 10 findings | held-out real text (top / ordinary) | token baseline AUROC (Pearson, Spearman) "
          "| grounded AUROC (BA) | ungrounded AUROC (BA) | control AUROC (BA) | grounded > ungrounded |")  # fmt: skip
    print("|---:|---:|---:|---|---|---|---|---|")
    wins = {"ungrounded": 0, "control": 0, "baseline": 0}
    for row in rows:
        b = row["token_baseline"]
        g, u, c = (auroc_of(row, name) for name in ("grounded", "ungrounded", "control"))
        beats = g is not None and u is not None and g > u
        wins["ungrounded"] += beats
        wins["control"] += g is not None and c is not None and g > c
        wins["baseline"] += g is not None and b["auroc"] is not None and g > b["auroc"]
        print(
            f"| {row['neuron']} | {row['themes_top10']} | {row['n_high']} / {row['n_low']} | {_num(b['auroc'])} "
            f"({_num(b['pearson'])}, {_num(b['spearman'])}) | {cell(row, 'grounded')} | {cell(row, 'ungrounded')} "
            f"| {cell(row, 'control')} | {'yes' if beats else 'no'} |"
        )
    print()
    for row in rows:
        print(f"neuron {row['neuron']}: grounded {row['sentences']['grounded']!r}; ungrounded {row['sentences']['ungrounded']!r}")
    n = len(rows)
    print(f"\ngrounded detection AUROC above the ungrounded on {wins['ungrounded']} of {n}, above the control on "
          f"{wins['control']} of {n}, above the token baseline on {wins['baseline']} of {n}")  # fmt: skip
    print(f"machine after:  {machine()}")


if __name__ == "__main__":
    main()

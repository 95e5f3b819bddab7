"""Explanations against chance: each run's own explanation scored beside the generic control
(issue #13's benchmark).

    python bench/explanation_quality.py RUN_DIR [RUN_DIR ...] [--llm embedded]
    python bench/explanation_quality.py --smoke

For each finished run folder (e.g. those bench/gradient_quality.py leaves in its temporary
results folder), `explain_run` explains its records with the LLM and scores the explanation and
the control the same way: detection (balanced accuracy on held-out high and low prompts of the
run, and its AUROC from the LLM's log-probabilities where it gives them) and generation (AUROC and mean-activation ratio of prompts the LLM wrote to fire and not to
fire, measured on the run's neuron). Writes each run's explanation.json, as `run.py explain` does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine, tiny_model_dir

from neuron_search.services.dataset.exemplars import real_text_holdout
from neuron_search.services.explain.run_explanation import explain_run, measurer
from neuron_search.services.llm.proposer import resolve_llm
from neuron_search.services.runtime import subject_model


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--llm", default="embedded")
    parser.add_argument("--smoke", action="store_true", help="a short run on the tiny model with a scripted LLM")
    args = parser.parse_args()
    if args.smoke:
        from neuron_search.testing.helpers import fresh_answers, scripted

        from neuron_search.api import NeuronSearch

        args.llm = scripted(fresh_answers(50, per_answer=8))
        result = NeuronSearch(model=tiny_model_dir(), layer=1, neuron=3, device="cpu", llm=args.llm, strategy="llm", explain=False,
                              results_dir=tempfile.mkdtemp(prefix="bench-explain-"), run_id="smoke").run(progress=False, iterations=4)  # fmt: skip
        args.runs = [result.run_dir]
    if not args.runs:
        parser.error("give one or more run folders (or --smoke)")
    spec = resolve_llm(args.llm)
    print(f"llm {spec}; machine before: {machine()}\n")
    print("| neuron | explanation | detection BA own / control (answered of asked) | detection AUROC own / control | generation AUROC own / control | mean ratio own / control | LLM s |")
    print("|---:|---|---|---|---|---|---:|")
    own_wins = detection_wins = 0
    for run_dir in args.runs:
        settings = json.loads((run_dir / "run.json").read_text())
        subject = subject_model(settings["model"], "cpu")
        measure = measurer(subject, settings["layer"], settings["neuron"], settings["position"], settings["batch_size"])
        started = time.perf_counter()
        real_text = real_text_holdout(subject, settings["layer"], settings["neuron"], seed=settings["seed"])
        final = explain_run(run_dir, spec, measure, seed=settings["seed"], real_text=real_text)
        seconds = time.perf_counter() - started
        scores = final["scores"] or {}
        if not scores:
            print(f"| {settings['neuron']} | {final['explanation']!r} | – | – | – | – | {seconds:.0f} |")
            continue
        own, control = scores["explanation"], scores["control"]
        d_own, d_ctl = own["detection"], control["detection"]
        g_own, g_ctl = own["generation"], control["generation"]
        asked = d_own["n_high"] + d_own["n_low"]
        own_wins += (g_own["auroc"] or 0) > (g_ctl["auroc"] or 0)
        detection_wins += (d_own["auroc"] or 0) > (d_ctl["auroc"] or 0)
        print(
            f"| {settings['neuron']} | {final['explanation'][:80]!r} | {_num(d_own['balanced_accuracy'])} / {_num(d_ctl['balanced_accuracy'])} "
            f"({d_own['n_answered']}, {d_ctl['n_answered']} of {asked}) | {_num(d_own['auroc'])} / {_num(d_ctl['auroc'])} "
            f"| {_num(g_own['auroc'])} / {_num(g_ctl['auroc'])} "
            f"({g_own['n_fire']}+{g_own['n_not']}) | {_num(g_own['ratio'])} / {_num(g_ctl['ratio'])} | {seconds:.0f} |"
        )
    print(f"\nown generation AUROC above the control's on {own_wins} of {len(args.runs)}; detection AUROC on {detection_wins}")
    print(f"machine after:  {machine()}")


if __name__ == "__main__":
    main()

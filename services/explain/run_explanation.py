"""A run's explanation: explain its records, score the explanation on held-out prompts, keep it.

`explain_run` is what the `explain` node does at the end of a search and what `run.py explain
RUN_ID` does for a finished run; `hypothesis` is the cheaper step `--explain-every` takes during a
search (the explanation of the records so far, scored by generation only). What they find is
kept in the run folder, in explanation.json (the final explanation, its scores and the
hypotheses' timeline), where results.json and the report read it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuron_search.services.dataset.exemplars import read_exemplars
from neuron_search.services.errors import UserError
from neuron_search.services.evidence.evidence_block import read_evidence
from neuron_search.services.explain.explainer import explain_grounded
from neuron_search.services.explain.grounded_view import ExplainerView, build_view
from neuron_search.services.explain.scoring import generation_score, score_explanation
from neuron_search.services.explain.token_baseline import baseline_score, sentence_correlation
from neuron_search.services.explain.verdict import verdict
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.storage.files import write_atomic
from neuron_search.services.storage.record_store import RecordStore, StoredRecord
from neuron_search.services.storage.run_folder import read_settings

EXPLANATION_FILE = "explanation.json"


class Measurer:
    """Measures prompts as the search measures them: called with prompts, their activations (NaN
    where one fails), for the scorer's generated prompts; `records(prompts)`, the measured records
    (tokens, per-token values, peak), for real snippets the explainer reads and the token baseline
    predicts (a prompt that fails is left out)."""

    def __init__(self, subject: SubjectModel, layer: int, neuron: int, position: str, batch_size: int) -> None:
        self.subject, self.layer, self.neuron, self.position, self.batch_size = subject, layer, neuron, position, batch_size

    def __call__(self, prompts: list[str]) -> list[float]:
        return [math.nan if m["error"] else m["activation"] for m in self._measured(prompts)]

    def records(self, prompts: list[str]) -> list[dict[str, Any]]:
        return [
            {**m, "token": m["tokens"][m["peak"]], "source": "real"}
            for m in self._measured(prompts)
            if not m["error"] and m["tokens"] and math.isfinite(m["activation"])
        ]

    def _measured(self, prompts: list[str]) -> list[Any]:
        return self.subject.measure(prompts, self.layer, self.neuron, self.position, batch_size=self.batch_size) if prompts else []


def measurer(subject: SubjectModel, layer: int, neuron: int, position: str, batch_size: int) -> Measurer:
    """The run's `Measurer` (activations of prompts the scorer wrote, records of real snippets)."""
    return Measurer(subject, layer, neuron, position, batch_size)


def llm_calls_of(block: dict[str, Any]) -> int:
    """LLM calls an explanation block (from `explain_run` or `hypothesis`) cost: the explainer's
    one, and every scoring call."""
    scores = [block.get("generation")]
    for row in (block.get("scores") or {}).values():
        scores += [row["detection"], row["generation"], row.get("real_text")]
    return 1 + sum(score["llm_calls"] for score in scores if score)


def read_explanation(run_dir: Path) -> dict[str, Any]:
    """The run's explanation.json ({} when it has none, or it cannot be read)."""
    try:
        document = json.loads((run_dir / EXPLANATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _write(run_dir: Path, document: dict[str, Any]) -> None:
    # A reader never sees half a file, a failed write leaves the previous one and no temporary
    # file, and two writers never share a temporary name.
    write_atomic(run_dir / EXPLANATION_FILE, json.dumps(document, indent=2))


def _stored(run_dir: Path) -> list[StoredRecord]:
    """Every record of the run, read from its record store."""
    store = RecordStore(run_dir / "records.sqlite")
    try:
        return list(store)
    finally:
        store.close()


REAL_TEXT_POOL = 20  # top real snippets (and as many ordinary ones) the caller draws: half are shown, half held out


def explain_run(
    run_dir: Path,
    llm_spec: str,
    measure: Callable[[list[str]], list[float]],
    seed: int = 0,
    n_generated: int = 8,
    real_text: tuple[list[str], list[str]] | None = None,
) -> dict[str, Any]:
    """Explain the run from the grounded view (services/explain/grounded_view.py: one prompt per
    theme, a seed-free sample of weaker ones, the neuron's top real snippets, the peak-token table and
    the run's logit effects) and score the sentence, beside a control and the token-lookup baseline,
    by detection on held-out measured prompts, by generation (new prompts measured with `measure`),
    and by detection on `real_text`, (top, ordinary) dataset snippets, where given
    (`real_text_holdout`): the top snippets' themes are dealt between the explainer and the held-out
    set (with a `Measurer`, which measures them; a plain function holds them all out), and no
    snippet the explainer saw is held out.

    Returns (and saves in explanation.json, keeping the hypotheses' timeline) the final block:
    the explanation, what the explainer saw, the held-out sizes, the scores, the token baseline's
    scores, and the `verdict` (services/explain/verdict.py). A run with too few measured prompts to
    hold any out gets its explanation and no detection score.
    """
    records = _stored(run_dir)
    started = time.perf_counter()
    real_high, real_low = _real_records(real_text, measure) if real_text else (_saved_snippets(run_dir), [])
    view = build_view(records, real_high, real_low, seed=seed)
    effects = read_evidence(run_dir).get("logit_effects")
    scale = max((r["activation"] for r in view.shown if r.get("activation") is not None), default=0.0) or 1.0
    text = explain_grounded(llm_spec, view, effects, scale, seed=seed)
    final: dict[str, Any] = {
        "explanation": text,
        "llm": llm_spec,
        "measured": sum(r["activation"] is not None for r in records),
        "shown": [r["prompt"] for r in view.shown],
        "themes": [
            {"prompt": t["best"]["prompt"], "activation": t["best"]["activation"], "token": t["best"]["token"],
             "source": t["best"]["source"], "variants": t["variants"], "low": t["low"], "high": t["high"]}
            for t in view.themes
        ],  # fmt: skip
        "real_shown": [r["prompt"] for r in view.real_shown],
        "peak_table": {**view.table, "at_peak": view.table["at_peak"][:10], "before_peak": view.table["before_peak"][:10]},
        "logit_effects_shown": bool(effects and effects.get("promoted")),
        "held_out": {"high": [r["prompt"] for r in view.high], "low": [r["prompt"] for r in view.low]},
        "scores": None,
        "token_baseline": None,
    }
    if real_text and view.real_high and view.real_low:
        final["held_out"]["real_high"] = [r["prompt"] for r in view.real_high]
        final["held_out"]["real_low"] = [r["prompt"] for r in view.real_low]
    if text:
        held = final["held_out"]
        final["scores"] = score_explanation(
            llm_spec, text, held["high"], held["low"], measure, n=n_generated, seed=seed,
            real_text=(held["real_high"], held["real_low"]) if "real_high" in held else None,
        )  # fmt: skip
        final["token_baseline"] = _baselines(view, "real_high" in final["held_out"])
        final["correlation"] = _correlations(final["scores"], view) if "real_high" in final["held_out"] else None
    final["verdict"] = verdict(final)
    final["seconds"] = round(time.perf_counter() - started, 1)
    document = {**read_explanation(run_dir), "final": final}
    _write(run_dir, document)
    return final


def _real_records(
    real_text: tuple[list[str], list[str]] | None, measure: Callable[[list[str]], list[float]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The real snippets as records: measured where `measure` can (a `Measurer`), else prompts alone."""
    if not real_text:
        return [], []
    records = getattr(measure, "records", None)
    if records is None:
        return [{"prompt": p} for p in real_text[0]], [{"prompt": p} for p in real_text[1]]
    high, low = records(list(real_text[0])), records(list(real_text[1]))
    return sorted(high, key=lambda r: -r["activation"]), low


def _saved_snippets(run_dir: Path) -> list[dict[str, Any]]:
    """The neuron's top real snippets from its saved exemplars.json (`run.py exemplars`, a --seed-corpus
    search), for the explainer to read where the layer's scan is not cached ([] where none is saved)."""
    try:
        settings = read_settings(run_dir, "to explain")
    except UserError:
        return []
    saved = read_exemplars(run_dir.parent, settings["model"], settings["layer"], settings["neuron"]) or {}
    return [dict(r, source="real") for r in saved.get("records", []) if r.get("tokens") and r.get("activation") is not None]


def _baselines(view: ExplainerView, real: bool) -> dict[str, Any]:
    """The token baseline (lookup: the view's peak-token table) on the held-out run prompts and, where
    they were measured, on the held-out real text."""
    measured = lambda rows: all(r.get("tokens") for r in rows)  # noqa: E731
    return {
        "table": view.table["label"],
        "run_prompts": baseline_score(view.table, view.high, view.low) if view.high and view.low else None,
        "real_text": baseline_score(view.table, view.real_high, view.real_low)
        if real and measured(view.real_high) and measured(view.real_low)
        else None,
    }


def _correlations(scores: dict[str, Any], view: ExplainerView) -> dict[str, Any] | None:
    """Pearson and Spearman of each sentence's probability of firing with the real activations of the
    held-out real text (where the judge gave probabilities and the snippets were measured)."""
    activations = {r["prompt"]: r["activation"] for r in view.real_high + view.real_low if r.get("activation") is not None}
    if not activations:
        return None
    return {name: sentence_correlation(row.get("real_text"), activations) for name, row in scores.items()}


def hypothesis(
    run_dir: Path,
    llm_spec: str,
    measure: Callable[[list[str]], list[float]],
    iteration: int,
    seed: int = 0,
    n_generated: int = 4,
) -> dict[str, Any]:
    """The explanation of the records so far, from the same grounded view as the final one (one prompt
    per theme, a seed-free sample, the saved real snippets; nothing held out), scored by generation,
    appended to the run's timeline of hypotheses (explanation.json) and returned."""
    view = build_view(_stored(run_dir), _saved_snippets(run_dir), (), n_holdout=0, seed=seed)
    scale = max((r["activation"] for r in view.shown if r.get("activation") is not None), default=0.0) or 1.0
    text = explain_grounded(llm_spec, view, read_evidence(run_dir).get("logit_effects"), scale, seed=seed)
    entry: dict[str, Any] = {"iteration": iteration, "explanation": text, "generation": None}
    if text:
        entry["generation"] = generation_score(llm_spec, text, measure, n=n_generated, seed=seed)
    document = read_explanation(run_dir)
    timeline = [h for h in document.get("hypotheses", []) if h["iteration"] < iteration]  # a replayed step replaces its entry
    _write(run_dir, {**document, "hypotheses": timeline + [entry]})
    return entry

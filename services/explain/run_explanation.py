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

from neuron_search.services.explain.examples import split_examples
from neuron_search.services.explain.explainer import explain
from neuron_search.services.explain.scoring import generation_score, score_explanation
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.storage.files import write_atomic
from neuron_search.services.storage.record_store import RecordStore, StoredRecord

EXPLANATION_FILE = "explanation.json"


def measurer(subject: SubjectModel, layer: int, neuron: int, position: str, batch_size: int) -> Callable[[list[str]], list[float]]:
    """Activations of prompts the scorer wrote, measured as the search measures (NaN where one fails)."""

    def measure(prompts: list[str]) -> list[float]:
        measured = subject.measure(prompts, layer, neuron, position, batch_size=batch_size)
        return [math.nan if m["error"] else m["activation"] for m in measured]

    return measure


def llm_calls_of(block: dict[str, Any]) -> int:
    """LLM calls an explanation block (from `explain_run` or `hypothesis`) cost: the explainer's
    one, and every scoring call."""
    scores = [block.get("generation")]
    for row in (block.get("scores") or {}).values():
        scores += [row["detection"], row["generation"]]
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


def _explained(
    records: list[StoredRecord], llm_spec: str, seed: int, n_holdout: int = 20
) -> tuple[str, list[StoredRecord], list[StoredRecord], list[StoredRecord]]:
    """The explanation of the records' chosen examples, those examples, and the held-out high and
    low records; activations are shown on a 0-10 scale of the highest example."""
    shown, high, low = split_examples(records, n_holdout=n_holdout, seed=seed)
    scale = max((r["activation"] for r in shown), default=0.0) or 1.0
    return explain(llm_spec, shown, scale, seed=seed), shown, high, low


def explain_run(
    run_dir: Path,
    llm_spec: str,
    measure: Callable[[list[str]], list[float]],
    seed: int = 0,
    n_generated: int = 8,
    real_text: tuple[list[str], list[str]] | None = None,
) -> dict[str, Any]:
    """Explain the run's records and score the explanation, beside a control, by detection on
    held-out measured prompts and by generation (new prompts measured with `measure`), and by
    detection on `real_text`, (high, low) dataset snippets, where given (`real_text_holdout`):
    snippets the explainer saw (a run seeded from the corpus measures them) are left out.

    Returns (and saves in explanation.json, keeping the hypotheses' timeline) the final block:
    the explanation, the prompts the explainer saw, the held-out sizes, the scores. A run with
    too few measured prompts to hold any out gets its explanation and no detection score.
    """
    records = _stored(run_dir)
    started = time.perf_counter()
    text, shown, high, low = _explained(records, llm_spec, seed)
    final: dict[str, Any] = {
        "explanation": text,
        "llm": llm_spec,
        "measured": sum(r["activation"] is not None for r in records),
        "shown": [r["prompt"] for r in shown],
        "held_out": {"high": [r["prompt"] for r in high], "low": [r["prompt"] for r in low]},
        "scores": None,
    }
    if real_text:
        seen = set(final["shown"])
        unseen = tuple([p for p in group if p not in seen] for group in real_text)
        if all(unseen):
            final["held_out"]["real_high"], final["held_out"]["real_low"] = unseen
    if text:
        held = final["held_out"]
        final["scores"] = score_explanation(
            llm_spec, text, held["high"], held["low"], measure, n=n_generated, seed=seed,
            real_text=(held["real_high"], held["real_low"]) if "real_high" in held else None,
        )  # fmt: skip
    final["seconds"] = round(time.perf_counter() - started, 1)
    document = {**read_explanation(run_dir), "final": final}
    _write(run_dir, document)
    return final


def hypothesis(
    run_dir: Path,
    llm_spec: str,
    measure: Callable[[list[str]], list[float]],
    iteration: int,
    seed: int = 0,
    n_generated: int = 4,
) -> dict[str, Any]:
    """The explanation of the records so far, scored by generation, appended to the run's
    timeline of hypotheses (explanation.json) and returned."""
    text, _, _, _ = _explained(_stored(run_dir), llm_spec, seed, n_holdout=0)
    entry: dict[str, Any] = {"iteration": iteration, "explanation": text, "generation": None}
    if text:
        entry["generation"] = generation_score(llm_spec, text, measure, n=n_generated, seed=seed)
    document = read_explanation(run_dir)
    timeline = [h for h in document.get("hypotheses", []) if h["iteration"] < iteration]  # a replayed step replaces its entry
    _write(run_dir, {**document, "hypotheses": timeline + [entry]})
    return entry

"""What a run's evidence needs the subject model for, computed when a search ends and kept in the run
folder's evidence.json (services/evidence/evidence_block.py reads it into results.json's `evidence`):

- `logit_effects`: services/evidence/logit_effects.py, from the model's weights;
- `attribution`: services/evidence/attribution.py, each earlier token's effect on the activation at
  the peak, for the best prompt of each of the run's top themes (up to `ATTRIBUTED`, from its record
  store: distinct findings grouped by services/search/themes.py) and for the neuron's best real
  snippets (up to `ATTRIBUTED`, from its saved exemplars.json, beside the run folders);
- `real_snippets`: None for now (the real snippets' peak tokens come from a saved exemplars.json;
  see `write_run_evidence`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from neuron_search.services.dataset.exemplars import read_exemplars
from neuron_search.services.evidence.attribution import Attribution, Source, attribution
from neuron_search.services.evidence.evidence_block import EVIDENCE_FILE
from neuron_search.services.evidence.logit_effects import DEFAULT_K, logit_effects
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.search.findings import ranked_themes
from neuron_search.services.storage.files import write_atomic
from neuron_search.services.storage.record_store import RecordStore

log = logging.getLogger("neuron_search")

ATTRIBUTED = 5  # top themes' best prompts, and real snippets, whose context is measured


def write_run_evidence(
    run_dir: Path,
    subject: SubjectModel,
    layer: int,
    neuron: int,
    k: int = DEFAULT_K,
    position: str = "max",
    allow_added_tokens: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    """Compute what needs the model (the logit effects; the attribution of the top themes' best
    prompts, measured as the run measured them (`position`, `allow_added_tokens`), and of the best
    real snippets of the neuron's exemplars.json for `model` (default: the subject's name), saved in
    the run folder's parent) and keep it in the run folder's evidence.json, where the results
    (services/reports/result_files.py) read it. Returns what was written."""
    run_dir = Path(run_dir)
    # The real snippets' peak tokens come from a saved exemplars.json (services/evidence/evidence_block.py).
    # Measuring a cached scan's top snippets here as well raised a gradient run's peak memory from 2.6
    # to 4.1 GiB at its end (tests/test_memory.py), for a reason not yet found: left out until it is.
    document: dict[str, Any] = {"logit_effects": logit_effects(subject, layer, neuron, k), "real_snippets": None}
    document["attribution"] = run_attribution(run_dir, subject, layer, neuron, position, allow_added_tokens, model)
    write_atomic(run_dir / EVIDENCE_FILE, json.dumps(document, indent=2))
    return document


def run_attribution(
    run_dir: Path,
    subject: SubjectModel,
    layer: int,
    neuron: int,
    position: str = "max",
    allow_added_tokens: bool = False,
    model: str | None = None,
) -> list[Attribution]:
    """The attribution of the best prompt of each of the run's top themes, then of the neuron's best
    real snippets (each list up to `ATTRIBUTED`). A prompt in both (a search seeded from the snippets)
    is measured once. A prompt that cannot be measured is logged and left out."""
    found: list[Attribution] = []
    todo: list[tuple[str, Source, str, bool]] = [
        (prompt, "top prompt", position, allow_added_tokens) for prompt in top_theme_prompts(run_dir)
    ]
    dataset = read_exemplars(run_dir.parent, model or subject.name, layer, neuron)
    for record in (dataset or {}).get("records", [])[:ATTRIBUTED]:
        if isinstance(record, dict) and isinstance(record.get("prompt"), str) and record["prompt"]:
            # Snippets are measured with --position max and their added tokens' names as text (exemplars.py).
            todo.append((record["prompt"], "real snippet", "max", False))
    done: dict[tuple[str, str, bool], Attribution] = {}  # a search seeded from the snippets has them among its top
    for prompt, source, where, added in todo:
        key = (prompt, where, added)
        try:
            if key not in done:
                done[key] = attribution(subject, prompt, layer, neuron, where, source, added)
            found.append(Attribution(**{**done[key], "source": source}))
        except Exception as error:  # noqa: BLE001 (one prompt; the others and the rest of the evidence stay)
            log.warning("No attribution for %r: %s: %s", prompt[:60], type(error).__name__, error)
    return found


def top_theme_prompts(run_dir: Path, n: int = ATTRIBUTED) -> list[str]:
    """The prompt of the best record of each of the run's top `n` themes (services/search/themes.py,
    as `ranked_themes` reads them for the report's table), best first; [] without a record store."""
    store = RecordStore.read_only(Path(run_dir) / "records.sqlite")
    if store is None:
        return []
    try:
        return [theme["best"]["prompt"] for theme in ranked_themes(store, n)]
    finally:
        store.close()

"""What a run's evidence needs the subject model for, computed when a search ends and kept in the run
folder's evidence.json (services/evidence/evidence_block.py reads it into results.json's `evidence`):

- `logit_effects`: services/evidence/logit_effects.py, from the model's weights;
- `real_snippets`: where no exemplars.json of the neuron is saved beside the run folders but the
  layer's scan of the default corpus is cached, the neuron's top REAL_SNIPPETS snippets of it,
  measured with their tokens and per-token values (as `run.py exemplars` measures them: position
  max), so that the peak tokens can be counted over real text too; None otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from services.dataset.corpus import corpus_source
from services.dataset.exemplars import cached_layer_scan, read_exemplars
from services.evidence.evidence_block import EVIDENCE_FILE
from services.evidence.logit_effects import DEFAULT_K, logit_effects
from services.model.subject_model import SubjectModel
from services.storage.files import write_atomic

REAL_SNIPPETS = 20  # the top real snippets measured from a cached scan, when no exemplars.json is saved


def write_run_evidence(run_dir: Path, subject: SubjectModel, layer: int, neuron: int, k: int = DEFAULT_K) -> dict[str, Any]:
    """Compute what needs the model (the logit effects; the top real snippets, where the layer's scan
    is cached and no exemplars.json is saved) and keep it in the run folder's evidence.json, where
    the results (services/reports/result_files.py) read it. Returns what was written."""
    run_dir = Path(run_dir)
    document: dict[str, Any] = {"logit_effects": logit_effects(subject, layer, neuron, k), "real_snippets": None}
    if read_exemplars(run_dir.parent, subject.name, layer, neuron) is None:
        document["real_snippets"] = _scanned_snippets(subject, layer, neuron)
    write_atomic(run_dir / EVIDENCE_FILE, json.dumps(document, indent=2))
    return document


def _scanned_snippets(subject: SubjectModel, layer: int, neuron: int) -> dict[str, Any] | None:
    """The neuron's top REAL_SNIPPETS snippets of the cached scan of the default corpus, measured with
    their tokens and values (as `run.py exemplars` measures them: position max); None if not cached."""
    cached = cached_layer_scan(subject, layer)
    if cached is None:
        return None
    snippets, maxima = cached
    column = np.nan_to_num(maxima[:, neuron], nan=-np.inf)
    best = np.argsort(-column, kind="stable")[:REAL_SNIPPETS]
    measured = [m for m in subject.measure([snippets[i] for i in best], layer, neuron, "max") if not m["error"]]
    measured.sort(key=lambda m: -m["activation"])
    keep = ("prompt", "activation", "peak", "tokens", "values")
    return {
        "corpus": corpus_source(None).description,
        "scanned": len(snippets),
        "records": [{key: m[key] for key in keep} for m in measured],
    }

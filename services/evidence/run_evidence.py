"""What a run's evidence needs the subject model for, computed when a search ends and kept in the run
folder's evidence.json (services/evidence/evidence_block.py reads it into results.json's `evidence`):

- `logit_effects`: services/evidence/logit_effects.py, from the model's weights;
- `real_snippets`: None for now (the real snippets' peak tokens come from a saved exemplars.json;
  see `write_run_evidence`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neuron_search.services.evidence.evidence_block import EVIDENCE_FILE
from neuron_search.services.evidence.logit_effects import DEFAULT_K, logit_effects
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.storage.files import write_atomic



def write_run_evidence(run_dir: Path, subject: SubjectModel, layer: int, neuron: int, k: int = DEFAULT_K) -> dict[str, Any]:
    """Compute what needs the model (the logit effects; the top real snippets, where the layer's scan
    is cached and no exemplars.json is saved) and keep it in the run folder's evidence.json, where
    the results (services/reports/result_files.py) read it. Returns what was written."""
    run_dir = Path(run_dir)
    # The real snippets' peak tokens come from a saved exemplars.json (services/evidence/evidence_block.py).
    # Measuring a cached scan's top snippets here as well raised a gradient run's peak memory from 2.6
    # to 4.1 GiB at its end (tests/test_memory.py), for a reason not yet found: left out until it is.
    document: dict[str, Any] = {"logit_effects": logit_effects(subject, layer, neuron, k), "real_snippets": None}
    write_atomic(run_dir / EVIDENCE_FILE, json.dumps(document, indent=2))
    return document

"""A run's evidence as results.json, the report and the API hold it: the `evidence` block.

Three parts (issue 35, items 2, 3 and 4):

- `peak_tokens`: the tokens the neuron peaks on, and the tokens right before its peaks
  (services/evidence/peak_tokens.py), in two separately labelled tables: `top_prompts`, over the
  run's top prompts (the records of the report's top table: one per finding), and `real_snippets`,
  over the neuron's top real snippets, or None where there are none. The real snippets are those of
  the neuron's exemplars.json (`run.py exemplars`, or a search's --seed-corpus, saved beside the run
  folders: what the report's dataset max is), else, where the layer's scan of the default corpus is
  cached, its top snippets as measured when the search ended (kept in the run's evidence.json).
- `logit_effects`: the tokens the neuron's output promotes and suppresses most
  (services/evidence/logit_effects.py), computed from the model's weights when the search ends and
  kept in the run folder's evidence.json (services/evidence/run_evidence.py), since rebuilding the
  results (`run.py report`) loads no model; None for a run that never had it computed.
- `attribution`: for the best prompt of each of the run's top themes and the neuron's best real
  snippets, each earlier token's effect on the activation at the peak, by removal (the one shown
  first) and by replacement with a neutral token (services/evidence/attribution.py), computed when
  the search ends and kept in evidence.json; [] for a run that never had it computed.

This module needs no model (nor torch): `run.py report` and `run.py --list` import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from neuron_search.services.evidence.peak_tokens import PeakTable, peak_table

if TYPE_CHECKING:
    from neuron_search.services.evidence.attribution import Attribution
    from neuron_search.services.evidence.logit_effects import LogitEffects

EVIDENCE_FILE = "evidence.json"


class PeakTokens(TypedDict):
    top_prompts: PeakTable  # over the run's top prompts (the report's top table)
    real_snippets: PeakTable | None  # over the neuron's top real snippets; None: none saved or cached


class Evidence(TypedDict):
    peak_tokens: PeakTokens
    logit_effects: LogitEffects | None  # None: not computed for this run (run_evidence.write_run_evidence)
    attribution: list[Attribution]  # [] : not computed for this run (run_evidence.write_run_evidence)


def read_evidence(run_dir: Path) -> dict[str, Any]:
    """The run's evidence.json ({} when it has none, or it cannot be read)."""
    try:
        document = json.loads((Path(run_dir) / EVIDENCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def evidence_block(
    top: Iterable[Mapping[str, Any]], dataset: Mapping[str, Any] | None, saved: Mapping[str, Any] | None
) -> Evidence:
    """results.json's `evidence`: `top` are the records of the run's top table, `dataset` the
    neuron's exemplars.json (None: none saved), `saved` the run's evidence.json ({} or None: none)."""
    top = list(top)
    saved = saved or {}
    real = None
    if dataset and dataset.get("records"):
        records = dataset["records"]
        real = peak_table(records, _snippets_label(len(records), dataset.get("corpus"), dataset.get("snippets_scanned")))
    elif isinstance(saved.get("real_snippets"), dict) and saved["real_snippets"].get("records"):
        scanned = saved["real_snippets"]
        records = scanned["records"]
        real = peak_table(records, _snippets_label(len(records), scanned.get("corpus"), scanned.get("scanned")))
    return Evidence(
        peak_tokens=PeakTokens(
            top_prompts=peak_table(top, f"the run's top {len(top)} prompts (one per finding, as in the top table)"),
            real_snippets=real,
        ),
        logit_effects=saved.get("logit_effects") or None,
        attribution=[entry for entry in saved.get("attribution") or [] if isinstance(entry, dict)],
    )


def _snippets_label(count: int, corpus: Any, scanned: Any) -> str:
    of = f" of {int(scanned):,} snippets" if isinstance(scanned, int) and scanned else ""
    return f"the neuron's top {count} real snippets{of} of {corpus or 'the corpus'}"

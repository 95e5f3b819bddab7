"""A run's results on disk: results.json, records.csv and report.html, from one pass over its records.

The record store is streamed once: the CSV is written row by row while the summary
(services/reports/record_summary.py) keeps what results.json and the page need. A neuron's dataset
examples (`run.py exemplars`, saved beside the run folders) are the baseline
(services/reports/dataset_reference.py). The `evidence` block (peak tokens, logit effects) is
services/evidence/evidence_block.py's, from the top table's records, the dataset examples and the
run's evidence.json.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from neuron_search.services.evidence.evidence_block import evidence_block
from neuron_search.services.reports.dataset_reference import DatasetReference, best_readable
from neuron_search.services.reports.record_summary import Summary
from neuron_search.services.reports.report_page import render_html
from neuron_search.services.storage.files import atomic_open, write_atomic
from neuron_search.services.storage.record_store import StoredRecord

CSV_COLUMNS = ("iteration", "slot", "source", "prompt", "activation", "token", "error", "xent", "tokens", "values")

# What a run's folder holds once a search or `run.py report` has written its results.
RESULT_FILES = {"json": "results.json", "csv": "records.csv", "html": "report.html"}


def write_results(
    run_dir: Path,
    settings: dict,
    stats: dict,
    records: Iterable[StoredRecord],
    top_n: int = 20,
    bottom_n: int = 10,
    bucket_counts: dict[str, int] | None = None,
    dataset: dict | None = None,
    explanation: dict | None = None,
    evidence: dict | None = None,
) -> dict[str, Path]:
    """Write results.json, records.csv and report.html into run_dir; return their paths by name.

    `dataset` is the neuron's exemplars.json as `run.py exemplars` saved it (None: there is none);
    `explanation` the run's explanation.json (services/explain/run_explanation.py; None: none);
    `evidence` the run's evidence.json (services/evidence/run_evidence.py writes it; None: none).
    """
    explanation = explanation or {}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: run_dir / file for name, file in RESULT_FILES.items()}
    summary = Summary(top_n=top_n, bottom_n=bottom_n)
    _write_csv(paths["csv"], _tap(records, summary))
    buckets = dict(bucket_counts or {})
    statistics = _statistics(stats)
    reference = DatasetReference.from_document(dataset)
    found = evidence_block(summary.top, dataset, evidence)
    # Each file is written beside itself and renamed into place: a failure (a full disk, a kill)
    # part of the way leaves the previous file whole, and no temporary file.
    write_atomic(
        paths["json"],
        json.dumps(
            {
                **_results_json(settings, statistics, buckets, summary, reference),
                "explanation": explanation.get("final"),
                "hypotheses": explanation.get("hypotheses", []),
                "evidence": found,
            },
            indent=2,
            default=str,
        ),
    )
    page = render_html(
        settings, statistics, buckets, summary, reference, results_dir=run_dir.parent, explanation=explanation, evidence=found
    )
    write_atomic(paths["html"], page)
    return paths


def _tap(records: Iterable[StoredRecord], summary: Summary) -> Iterator[StoredRecord]:
    """Feed each record to the summary on its way to the CSV, so the records are read once."""
    for record in records:
        summary.add(record)
        yield record


def _write_csv(path: Path, records: Iterable[StoredRecord]) -> None:
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in records:
            activation = "" if r["activation"] is None else repr(float(r["activation"]))
            writer.writerow(
                [
                    r["iteration"],
                    r["slot"],
                    r["source"],
                    r["prompt"],
                    activation,
                    r["token"],
                    r["error"],
                    "" if r.get("xent") is None else repr(float(r["xent"])),
                    json.dumps(r["tokens"], ensure_ascii=False),
                    json.dumps(r["values"]),
                ]
            )


def _statistics(stats: dict) -> dict[str, float | int]:
    generated = stats.get("generated", 0)
    rate = float(stats.get("accepted", 0)) / generated if generated else 0.0
    statistics: dict[str, float | int] = {}
    for key, value in stats.items():
        statistics[key] = value
        if key == "accepted":
            statistics["accepted_rate"] = rate  # next to its counter in the report's table
    statistics.setdefault("accepted_rate", rate)
    return statistics


def _brief(record: StoredRecord) -> dict[str, Any]:
    return {
        "prompt": record["prompt"],
        "activation": float(record["activation"]),
        "token": record["token"],
        "source": record["source"],
        "iteration": int(record["iteration"]),
        "xent": record.get("xent"),
    }


def _theme_brief(record: StoredRecord) -> dict[str, Any]:
    """A table row: the best prompt of a theme of near-copies (services/search/themes.py), with how
    many findings it stands for and their activation range."""
    activation = float(record["activation"])
    return {
        **_brief(record),
        "variants": int(record.get("variants", 1)),
        "activation_low": float(record.get("activation_low", activation)),
        "activation_high": float(record.get("activation_high", activation)),
    }


def _front_brief(record: StoredRecord) -> dict[str, Any]:
    return {
        "prompt": record["prompt"],
        "activation": float(record["activation"]),
        "xent": float(record["xent"]),
        "source": record["source"],
        "iteration": int(record["iteration"]),
    }


def _results_json(
    settings: dict, statistics: dict, buckets: dict, summary: Summary, dataset: DatasetReference | None = None
) -> dict[str, Any]:
    readable = best_readable(summary, dataset)
    return {
        "settings": settings,
        "statistics": statistics,
        "bucket_counts": buckets,
        "records": {
            "total": summary.seen,
            "measured": summary.measured,
            "failed": summary.failed,
            "by_source": dict(summary.by_source),
        },
        "best": _brief(summary.best) if summary.best else None,
        "top": [_theme_brief(r) for r in summary.top],
        "bottom": [_theme_brief(r) for r in summary.bottom],
        "pareto": [_front_brief(r) for r in summary.front],
        "best_readable": {**_front_brief(readable.record), "rule": readable.rule} if readable else None,
        "dataset": {
            "max": dataset.max,
            "prompt": dataset.top["prompt"],
            "xent": dataset.xent,
            "scanned": dataset.scanned,
            "corpus": dataset.corpus,
        }
        if dataset
        else None,
    }

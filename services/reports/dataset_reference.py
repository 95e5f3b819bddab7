"""The dataset baseline and the best readable prompt.

A neuron's dataset examples (`run.py exemplars`, saved beside the run folders) are the baseline:
the headline puts their max beside the best found, the Pareto chart draws them as reference points,
and the best readable prompt is chosen against their cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from neuron_search.services.reports.record_summary import Summary, finite
from neuron_search.services.storage.record_store import StoredRecord


@dataclass(frozen=True)
class DatasetReference:
    """A neuron's top real-text snippets, as `run.py exemplars` saved them (exemplars.json)."""

    records: list[dict]  # highest activation first: prompt, activation, xent (absent in older files), ...
    scanned: int
    corpus: str

    @classmethod
    def from_document(cls, document: dict | None) -> DatasetReference | None:
        if not document or not document.get("records"):
            return None
        return cls(document["records"], int(document.get("snippets_scanned", 0)), str(document.get("corpus", "")))

    @property
    def top(self) -> dict:
        return self.records[0]

    @property
    def max(self) -> float:
        return float(self.top["activation"])

    @property
    def xent(self) -> float | None:
        return finite(self.top.get("xent"))

    def points(self) -> list[tuple[float, float]]:
        """(xent, activation) of the examples that have a cross-entropy."""
        return [(float(r["xent"]), float(r["activation"])) for r in self.records if finite(r.get("xent")) is not None]


class Readable(NamedTuple):
    record: StoredRecord
    rule: str  # "dataset_xent" or "balanced"


def best_readable(summary: Summary, dataset: DatasetReference | None) -> Readable | None:
    """The prompt that reads like real text and drives the neuron most.

    With a dataset reference whose top example has a cross-entropy: the highest activation among
    prompts whose cross-entropy is at or below that example's ("dataset_xent"). Otherwise, or when
    no prompt is that readable, the lowest -activation + cross-entropy ("balanced"). Both are points
    of the front: a prompt that dominates another is at least as good under either rule.
    """
    front = summary.front
    if not front:
        return None
    threshold = dataset.xent if dataset else None
    if threshold is not None:
        readable = [r for r in front if r["xent"] <= threshold]
        if readable:
            return Readable(readable[-1], "dataset_xent")  # activation rises along the front
    return Readable(min(front, key=lambda r: r["xent"] - r["activation"]), "balanced")


def rule_text(readable: Readable, dataset: DatasetReference | None) -> str:
    if readable.rule == "dataset_xent":
        return f"highest activation at a cross-entropy at or below the dataset max's ({dataset.xent:.3f})"
    reason = ""
    if dataset and dataset.xent is not None:
        reason = f"no prompt's cross-entropy is at or below the dataset max's ({dataset.xent:.3f}), so: "
    elif dataset:
        reason = "the dataset examples were saved without their cross-entropy, so: "
    return reason + "lowest −activation + cross-entropy on the front"

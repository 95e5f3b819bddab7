"""Ten findings, not one finding with ten tails.

With causal attention, tokens after a prompt's peak cannot change the activation at the peak: with
`--position max`, a prompt and the same prompt with other words after its peak are one finding.
Left alone, mutations that append or edit words after the peak fill the top-k with copies of a few
findings. Records that share the text through the peak and the activation (to four decimals) are
folded into one, in its shortest form, wherever prompts are ranked: the top and bottom tables, what
the LLM is shown, `result.top()`. (With `--position last` the peak is the last token, so a finding is
the whole prompt and only exact repeats fold.)
"""

from __future__ import annotations

from collections.abc import Iterable

from state import Record


def finding_key(record: Record) -> tuple[str, float]:
    return record.get("finding", record["prompt"]), round(record["activation"], 4)


def distinct_findings(records: Iterable[Record]) -> list[Record]:
    """The records in their order, one per finding (at its first place), each in its shortest form."""
    shortest: dict[tuple[str, float], Record] = {}
    for record in records:
        key = finding_key(record)
        if key not in shortest or len(record["prompt"]) < len(shortest[key]["prompt"]):
            shortest[key] = record
    return list(shortest.values())

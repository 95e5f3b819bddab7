"""The verdict on an explanation: does the sentence beat the control AND the token-lookup baseline?

One metric decides, the same for the three: detection AUROC (the probability that a held-out high
text scores above a held-out low one) on held-out real text where it was scored, else on the run's
held-out prompts. The sentence's and the control's AUROC come from the judge's log-probabilities
(services/explain/scoring.py), the baseline's from its token-lookup prediction
(services/explain/token_baseline.py). Where there is no AUROC (an LLM without log-probabilities),
balanced accuracy decides against the control and the baseline cannot be compared.

A sentence "wins" only when it beats both, strictly; otherwise the headline says "not better than
the control" (or "not better than the token baseline") and the report leads with the evidence
instead of the sentence. Nothing here calls an LLM or a model: it reads a scored block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict


class Verdict(TypedDict):
    wins: bool  # beats the control and the token baseline on `metric`
    metric: str  # what was compared, in words
    on: str  # "real_text", "run_prompts" or "" (nothing could be compared)
    n_high: int
    n_low: int
    explanation: float | None
    control: float | None
    token_baseline: float | None
    beats_control: bool
    beats_baseline: bool | None  # None: the baseline could not be compared
    headline: str


ON_WORDS = {
    "real_text": "{n_high} held-out top real snippets from {n_low} ordinary ones",
    "run_prompts": "{n_high} held-out high prompts of the run from {n_low} low ones",
}


def _diff(a: float, b: float) -> str:
    return f"{a - b:+.2f}"


def verdict(final: Mapping[str, Any]) -> Verdict:
    """The verdict on a final explanation block (explanation.json's `final`, with `scores` and, where
    computed, `token_baseline` {"real_text": score, "run_prompts": score})."""
    sentence = final.get("explanation") or ""
    scores = final.get("scores") or {}
    baselines = final.get("token_baseline") or {}
    if not sentence or not scores:
        return _lost(sentence, "", "", 0, 0, None, None, None, False, None, "it was not scored")
    ours, control = scores.get("explanation") or {}, scores.get("control") or {}
    for on, key in (("real_text", "real_text"), ("run_prompts", "detection")):
        mine, theirs = ours.get(key) or {}, control.get(key) or {}
        if mine.get("auroc") is not None and theirs.get("auroc") is not None:
            base = (baselines.get(on) or {}).get("auroc")
            return _compare(sentence, on, "detection AUROC", mine, theirs, base)
    mine, theirs = ours.get("detection") or {}, control.get("detection") or {}
    if mine.get("balanced_accuracy") is not None and theirs.get("balanced_accuracy") is not None:
        return _compare(sentence, "run_prompts", "detection balanced accuracy", mine, theirs, None, key="balanced_accuracy")
    return _lost(sentence, "", "", 0, 0, None, None, None, False, None, "no held-out detection score could be computed")


def _compare(
    sentence: str, on: str, metric: str, mine: Mapping[str, Any], theirs: Mapping[str, Any], base: float | None, key: str = "auroc"
) -> Verdict:
    x, c = float(mine[key]), float(theirs[key])
    n_high, n_low = int(mine.get("n_high", 0)), int(mine.get("n_low", 0))
    beats_control = x > c
    beats_baseline = None if base is None else x > base
    where = f"{metric} telling {ON_WORDS[on].format(n_high=n_high, n_low=n_low)}"
    parts = [
        f"{'beats' if beats_control else 'is not better than'} the control ({x:.2f} against {c:.2f}, {_diff(x, c)})",
        "the token baseline could not be compared"
        if base is None
        else f"{'beats' if beats_baseline else 'is not better than'} the token baseline ({x:.2f} against {base:.2f}, {_diff(x, base)})",
    ]
    wins = beats_control and bool(beats_baseline)
    if wins:
        headline = f"{sentence} (The sentence {parts[0]} and {parts[1]}, on {where}.)"
    else:
        headline = f"No explanation beats the evidence: the LLM's sentence {parts[0]} and {parts[1]}, on {where}."
    return Verdict(
        wins=wins, metric=metric, on=on, n_high=n_high, n_low=n_low, explanation=x, control=c, token_baseline=base,
        beats_control=beats_control, beats_baseline=beats_baseline, headline=headline,
    )  # fmt: skip


def _lost(sentence: str, metric: str, on: str, n_high: int, n_low: int, x, c, base, beats_control, beats_baseline, why: str) -> Verdict:
    said = "The LLM gave no usable sentence" if not sentence else "The LLM's sentence could not be judged"
    return Verdict(
        wins=False, metric=metric, on=on, n_high=n_high, n_low=n_low, explanation=x, control=c, token_baseline=base,
        beats_control=beats_control, beats_baseline=beats_baseline, headline=f"{said} ({why}): it is not shown as the answer.",
    )  # fmt: skip

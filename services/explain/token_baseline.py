"""A token-lookup baseline for an explanation (OpenAI's "Language models can explain neurons", 2023):
predict a text's activation from the tokens alone, with no sentence at all.

The lookup is a peak-token table (services/evidence/peak_tokens.py): for each token the neuron peaked on
in the examples the explainer saw, the mean activation at those peaks. A held-out text is predicted as
the highest table value of any of its tokens; a token that is not in the table predicts MISSING (0.0:
"no evidence that it fires"). The prediction is scored as the sentence is: AUROC of telling the held-out
high texts from the low ones, and its Pearson and Spearman correlation with their real activations.
An explanation that cannot beat this lookup says little that the peak-token table does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from neuron_search.services.explain.scoring import auroc

MISSING = 0.0  # the prediction from a token the table does not hold
MISSING_RULE = "tokens not in the table predict 0"


def lookup_of(table: Mapping[str, Any]) -> dict[str, float]:
    """token -> mean activation at the peaks on it, from a peak-token table's `at_peak` rows."""
    return {row["token"]: float(row["mean_activation"]) for row in table.get("at_peak", [])}


def predict(tokens: Sequence[str], lookup: Mapping[str, float], missing: float = MISSING) -> float:
    """The highest looked-up value of any of `tokens` (`missing` for a token not in `lookup`, and for
    a text with no tokens)."""
    return max((lookup.get(t, missing) for t in tokens), default=missing)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None for fewer than 3 pairs or a constant side."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson's r of the ranks, ties sharing their mean rank); None as `pearson`."""
    if len(x) < 3:
        return None
    return pearson(_ranks(x), _ranks(y))


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def baseline_score(
    table: Mapping[str, Any], high: Sequence[Mapping[str, Any]], low: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The lookup's scores on held-out `high` and `low` measured texts (each with `prompt`, `tokens`,
    `activation`): AUROC of the prediction against high/low, Pearson and Spearman of the prediction
    with the activation, the sizes, and each text's prediction."""
    lookup = lookup_of(table)
    rows = [
        {"prompt": r["prompt"], "high": label, "activation": float(r["activation"]), "predicted": predict(r["tokens"], lookup)}
        for label, group in ((True, high), (False, low))
        for r in group
        if r.get("activation") is not None and math.isfinite(float(r["activation"]))
    ]
    predicted = [r["predicted"] for r in rows]
    actual = [r["activation"] for r in rows]
    return {
        "auroc": _number(auroc([r["high"] for r in rows], predicted)) if rows else None,
        "pearson": _number(pearson(predicted, actual)),
        "spearman": _number(spearman(predicted, actual)),
        "n_high": sum(r["high"] for r in rows),
        "n_low": sum(not r["high"] for r in rows),
        "table_tokens": len(lookup),
        "missing": MISSING_RULE,
        "examples": rows,
    }


def sentence_correlation(detection: Mapping[str, Any] | None, activations: Mapping[str, float]) -> dict[str, float | None]:
    """Pearson and Spearman of a detection score's per-text probability of firing (`p_fires`, from the
    judge's log-probabilities) with the texts' real activations, so a sentence is compared with the
    baseline on the same footing; None where there are no probabilities."""
    pairs = [
        (e["p_fires"], activations[e["prompt"]])
        for e in (detection or {}).get("examples", [])
        if e.get("p_fires") is not None and e["prompt"] in activations
    ]
    if not pairs:
        return {"pearson": None, "spearman": None, "n": 0}
    p, a = zip(*pairs)
    return {"pearson": _number(pearson(p, a)), "spearman": _number(spearman(p, a)), "n": len(pairs)}

"""The token-lookup baseline: a held-out text is predicted as the highest mean peak activation of any of
its tokens in a peak-token table (0 for a token not in it), and scored as the sentence is."""

from __future__ import annotations

import math

import pytest

from neuron_search.services.evidence.peak_tokens import peak_table
from neuron_search.services.explain.token_baseline import baseline_score, lookup_of, pearson, predict, sentence_correlation, spearman


def rec(tokens: list[str], values: list[float]) -> dict:
    peak = max(range(len(values)), key=values.__getitem__)
    return {"prompt": "".join(tokens), "tokens": tokens, "values": values, "peak": peak, "token": tokens[peak], "activation": values[peak]}


# The explainer saw: three peaks on " (" (2.0, 3.0, 4.0: mean 3.0), one on " [" (1.0).
SHOWN = [
    rec(["a", " (", "b"], [0.1, 2.0, 0.0]),
    rec(["c", " (", "d"], [0.2, 3.0, 0.1]),
    rec(["e", " (", "f"], [0.0, 4.0, 0.3]),
    rec(["g", " ["], [0.1, 1.0]),
]


def test_the_lookup_is_the_peak_tables_mean_activation_per_token():
    table = peak_table(SHOWN, "shown")
    assert lookup_of(table) == {" (": 3.0, " [": 1.0}


def test_a_text_is_predicted_by_its_best_token_and_unknown_tokens_predict_zero():
    lookup = lookup_of(peak_table(SHOWN, "shown"))
    assert predict(["x", " [", " ("], lookup) == 3.0
    assert predict(["x", " ["], lookup) == 1.0
    assert predict(["x", "y"], lookup) == 0.0
    assert predict([], lookup) == 0.0


def test_the_baseline_scores_held_out_texts_by_auroc_and_correlation():
    table = peak_table(SHOWN, "shown")
    high = [rec(["p", " ("], [0.0, 2.5]), rec(["q", " ["], [0.0, 1.5])]
    low = [rec(["r", "s"], [0.2, 0.1]), rec(["t", " ["], [0.3, 0.4])]
    score = baseline_score(table, high, low)
    assert [e["predicted"] for e in score["examples"]] == [3.0, 1.0, 0.0, 1.0]
    # High texts predict 3 and 1, low ones 0 and 1: 3 of 4 pairs ordered right, one tie (half).
    assert score["auroc"] == pytest.approx(3.5 / 4)
    assert score["pearson"] == pytest.approx(pearson([3.0, 1.0, 0.0, 1.0], [2.5, 1.5, 0.2, 0.4]))
    assert score["spearman"] == pytest.approx(pearson([4, 2.5, 1, 2.5], [4, 3, 1, 2]))
    assert (score["n_high"], score["n_low"], score["table_tokens"]) == (2, 2, 2)


def test_a_baseline_that_knows_nothing_is_chance():
    score = baseline_score(peak_table([], "nothing"), [rec(["a", " ("], [0.0, 2.0])], [rec(["b", "c"], [0.0, 0.1])])
    assert score["auroc"] == 0.5 and score["pearson"] is None  # every prediction is 0


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None


def test_a_sentences_correlation_reads_its_probabilities_of_firing():
    detection = {"examples": [{"prompt": "a", "p_fires": 0.9}, {"prompt": "b", "p_fires": 0.5}, {"prompt": "c", "p_fires": 0.1}, {"prompt": "d", "p_fires": None}]}
    got = sentence_correlation(detection, {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0})
    assert got["n"] == 3 and got["spearman"] == pytest.approx(1.0) and got["pearson"] == pytest.approx(1.0)
    assert sentence_correlation(None, {})["pearson"] is None and not math.isnan(sentence_correlation(None, {})["n"])

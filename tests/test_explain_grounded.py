"""The grounded explainer (issue 35, item 5): it reads one prompt per theme, the neuron's top real
snippets (never the ones it is scored on) and no built-in seed unless a seed is genuinely among the
top; the verdict names the win, or says "not better than the control" and the evidence leads."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from rich.console import Console

from neuron_search.services.explain.explainer import build_grounded_request, explain_grounded
from neuron_search.services.explain.grounded_view import build_view
from neuron_search.services.explain.verdict import verdict
from neuron_search.services.reports.explanation_view import explanation_html, explanation_table, explanation_wins
from neuron_search.services.search.seeds import BUILTIN_SEEDS
from neuron_search.testing.helpers import WORDS, scripted


def record(prompt: str, peak_value: float, source: str = "llm", peak: int | None = None) -> dict[str, Any]:
    """A stored record whose tokens are the prompt's words (with their spaces), peaking on the last
    word (or word `peak`) at `peak_value`, every other word at a tenth of it."""
    words = prompt.split(" ")
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    peak = len(tokens) - 1 if peak is None else peak
    values = [peak_value / 10] * len(tokens)
    values[peak] = peak_value
    return dict(
        iteration=1, slot=0, source=source, prompt=prompt, activation=peak_value, token=tokens[peak],
        tokens=tokens, values=values, error="", xent=None, peak=peak,
    )  # fmt: skip


THEME_A = "the river ran past the old stone mill near the quiet village green ("
THEME_B = "seven copper engines stood in the orbit ledger all night ["
THEME_C = "violet cloud over ninety alpha towers :"


def drop(prompt: str, i: int) -> str:
    words = prompt.split(" ")
    return " ".join(words[:i] + words[i + 1 :])


def run_records(seed_on_top: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(0)
    records = [record(THEME_A, 5.0)] + [record(drop(THEME_A, i), 5.0 - 0.1 * i) for i in range(1, 5)]
    records += [record(THEME_B, 4.0)] + [record(drop(THEME_B, i), 4.0 - 0.1 * i) for i in range(1, 3)]
    records += [record(THEME_C, 3.0)]
    # Ordinary prompts, weaker, and the built-in seeds, weaker still (not among the top ten themes), but
    # in the range the weaker sample is drawn from.
    records += [record(" ".join(rng.sample(WORDS, 5)) + f" w{i}", rng.uniform(0.0, 2.0)) for i in range(60)]
    records += [record(s, rng.uniform(0.0, 1.0), source="seed") for s in BUILTIN_SEEDS]
    if seed_on_top:
        records.append(record(BUILTIN_SEEDS[0], 9.0, source="seed"))
    return records


REAL_HIGH = [
    record("Return a file descriptor (", 6.0, "real"),
    record("Open the socket and return its handle [", 5.5, "real"),
    record("Close every file that (", 5.0, "real"),
    record("Read the header of the archive (", 4.5, "real"),
]
REAL_LOW = [record("plain words here", 0.1, "real"), record("more plain words", 0.2, "real")]


def plain(request: str) -> str:
    return request.replace("<<", "").replace(">>", "")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_request_holds_one_prompt_per_theme_real_snippets_and_no_builtin_seed(seed):
    view = build_view(run_records(), REAL_HIGH, REAL_LOW, seed=seed)
    request = plain(build_grounded_request(view, None, scale_max=6.0)[1].text)
    # One prompt per theme: each theme's best, none of its variants.
    for theme, variants in ((THEME_A, 4), (THEME_B, 2)):
        assert request.count(theme) == 1
        assert not any(drop(theme, i) in request for i in range(1, variants + 1))
    assert "stands for 5 near-copies" in request and "stands for 3 near-copies" in request
    assert [t["variants"] for t in view.themes[:3]] == [5, 3, 1]
    # Real snippets: themes dealt alternately, the first to the explainer, the second held out.
    assert [r["prompt"] for r in view.real_shown] == [REAL_HIGH[0]["prompt"], REAL_HIGH[2]["prompt"]]
    assert all(r["prompt"] in request for r in view.real_shown)
    assert [r["prompt"] for r in view.real_high] == [REAL_HIGH[1]["prompt"], REAL_HIGH[3]["prompt"]]
    assert not any(r["prompt"] in request for r in view.real_high)
    # The seeds are as strong as the sample's other prompts, yet none reaches the explainer.
    assert not any(s in request for s in BUILTIN_SEEDS)
    assert len(view.sampled) == 10 and all(r["source"] != "seed" for r in view.sampled)
    # The peak-token table is over what it was shown, in the request.
    assert view.table["records"] == len(view.themes) + len(view.real_shown)
    assert 'Tokens the neuron fires on most in these texts: " ("' in request


def test_a_builtin_seed_genuinely_among_the_top_is_shown():
    view = build_view(run_records(seed_on_top=True), REAL_HIGH, REAL_LOW)
    assert view.themes[0]["best"]["prompt"] == BUILTIN_SEEDS[0]
    assert BUILTIN_SEEDS[0] in plain(build_grounded_request(view, None, scale_max=9.0)[1].text)


def test_held_out_prompts_are_no_member_of_a_shown_theme():
    view = build_view(run_records(), REAL_HIGH, REAL_LOW)
    held = {r["prompt"] for r in view.high + view.low}
    variants = {drop(THEME_A, i) for i in range(1, 5)} | {drop(THEME_B, i) for i in range(1, 3)}
    assert held and not held & variants and not held & {r["prompt"] for r in view.shown}


def test_the_logit_effects_reach_the_request_and_the_sentence_comes_back():
    effects = {"promoted": [{"token": " file", "id": 1, "effect": 1.0}], "suppressed": [{"token": " the", "id": 2, "effect": -1.0}]}
    view = build_view(run_records(), REAL_HIGH, REAL_LOW)
    request = build_grounded_request(view, effects, scale_max=6.0)[1].text
    assert 'more likely: " file"' in request and 'less likely: " the"' in request
    llm = scripted([json.dumps({"explanation": "The neuron fires on an opening bracket after a word."})])
    assert explain_grounded(llm, view, effects, 6.0) == "The neuron fires on an opening bracket after a word."


# --- The verdict ---------------------------------------------------------------------------


def final(ours: float, control: float, baseline: float | None) -> dict[str, Any]:
    def detection(a: float) -> dict[str, Any]:
        return {"auroc": a, "balanced_accuracy": 0.5, "n_high": 10, "n_low": 12, "n_answered": 22}

    return {
        "explanation": "The neuron fires on Fibonacci numbers.",
        "llm": "embedded",
        "held_out": {"high": ["h"], "low": ["l"], "real_high": ["rh"] * 10, "real_low": ["rl"] * 12},
        "scores": {
            "explanation": {"text": "x", "detection": detection(0.6), "generation": None, "real_text": detection(ours)},
            "control": {"text": "c", "detection": detection(0.6), "generation": None, "real_text": detection(control)},
        },
        "token_baseline": {"run_prompts": None, "real_text": None if baseline is None else {"auroc": baseline, "n_high": 10, "n_low": 12}},
    }


def terminal(block: dict[str, Any]) -> str:
    console = Console(width=400, record=True)
    console.print(explanation_table(block))
    return console.export_text()


def test_a_sentence_at_the_control_is_not_the_answer():
    block = final(0.68, 0.70, 0.9)
    judged = verdict(block)
    assert not judged["wins"] and "not better than the control" in judged["headline"]
    assert "(0.68 against 0.70, -0.02)" in judged["headline"] and "10 held-out top real snippets from 12 ordinary ones" in judged["headline"]
    page = explanation_html({"final": block})
    assert 'class="explanation"' not in page and "not better than the control" in page and "not the answer" in page
    assert not explanation_wins({"final": block})
    assert "not better than the control" in terminal(block) and "What the neuron detects: unknown" in terminal(block)


def test_a_sentence_that_beats_the_control_but_not_the_token_lookup_is_not_the_answer():
    judged = verdict(final(0.80, 0.60, 0.85))
    assert not judged["wins"] and "beats the control (0.80 against 0.60, +0.20)" in judged["headline"]
    assert "not better than the token baseline (0.80 against 0.85, -0.05)" in judged["headline"]


def test_a_sentence_that_beats_both_is_the_answer_and_says_by_how_much():
    block = final(0.80, 0.60, 0.70)
    judged = verdict(block)
    assert judged["wins"] and judged["headline"].startswith("The neuron fires on Fibonacci numbers.")
    assert "beats the control (0.80 against 0.60, +0.20) and beats the token baseline (0.80 against 0.70, +0.10)" in judged["headline"]
    assert "10 held-out top real snippets from 12 ordinary ones" in judged["headline"]
    page = explanation_html({"final": block})
    assert re.search(r'<p class="explanation">The neuron fires on Fibonacci numbers.</p>', page) and "not better" not in page
    assert explanation_wins({"final": block}) and "What the neuron detects: The neuron fires on" in terminal(block)


def test_without_a_token_baseline_no_sentence_wins():
    assert not verdict(final(0.9, 0.5, None))["wins"]
    assert not verdict({"explanation": "x", "scores": None})["wins"]


def test_without_ordinary_snippets_to_score_against_the_explainer_reads_every_real_theme():
    view = build_view(run_records(), REAL_HIGH, [])
    assert [r["prompt"] for r in view.real_shown] == [r["prompt"] for r in REAL_HIGH] and not view.real_high


def test_the_hypotheses_during_a_search_read_the_same_grounded_view(tmp_path, monkeypatch):
    """--explain-every's hypotheses see one prompt per theme, the saved real snippets and no built-in
    seed, as the final explanation does (they used to see the top ten records, near-copies and all)."""
    from neuron_search.services.explain import run_explanation

    seen = []
    monkeypatch.setattr(run_explanation, "_stored", lambda run_dir: run_records())
    monkeypatch.setattr(run_explanation, "_saved_snippets", lambda run_dir: REAL_HIGH)
    monkeypatch.setattr(run_explanation, "explain_grounded", lambda spec, view, effects, scale, seed=0: seen.append(view) or "")
    entry = run_explanation.hypothesis(tmp_path, "scripted", lambda prompts: [0.0] * len(prompts), iteration=3)
    (view,) = seen
    assert entry["iteration"] == 3 and entry["generation"] is None  # no sentence: nothing to score
    tops = [t["best"]["prompt"] for t in view.themes]
    assert tops[:3] == [THEME_A, THEME_B, THEME_C] and [t["variants"] for t in view.themes[:3]] == [5, 3, 1]
    assert not any(r.get("source") == "seed" for r in view.shown)
    assert [r["prompt"] for r in view.real_shown] and view.high == [] and view.low == []

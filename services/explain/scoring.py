"""How good is an explanation? Score it on prompts it was not written from, beside a control.

Detection (delphi): the LLM sees only the explanation and held-out prompts, high and low mixed,
and says which ones fire; balanced accuracy says how well the explanation tells them apart.
Generation: the LLM writes prompts that should and should not fire per the explanation, and the
subject model measures them; AUROC and the mean activations say whether the explanation is
causal enough to write new firing text. Each score comes with the same score of a control
explanation (a generic sentence), so a reader sees what chance gives on the same prompts.

Detection has no AUROC: that needs a probability per example, which llama.cpp could give through
log-probabilities, but ChatLlamaCpp returns text only and a boolean per example is all the other
chat models give; its `auroc` stays None until a backend reports probabilities.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from services.explain.structured import JsonAnswer, ask_json
from services.llm.prompt_parsing import parse_prompts
from services.llm.proposer import prompts_schema, resolve_llm

CONTROL_EXPLANATION = "Common English words."
MAX_GENERATED_CHARS = 120  # a prompt is a phrase or a sentence; the bound lets the JSON close

DETECT_SYSTEM_PROMPT = """\
You test an explanation of what makes one neuron of a language model fire. You get the \
explanation and numbered texts. For each text, decide from the explanation alone whether the \
neuron fires on it.
Answer with JSON only: {"fires": [true, false, ...]}, one boolean per text, in the texts' order."""

DETECT_REQUEST_TEMPLATE = """\
Explanation: {explanation}

{examples}

For each of the {n} texts: does the neuron fire on it? Answer with JSON only, {n} booleans: \
{{"fires": [...]}}"""

GENERATE_SYSTEM_PROMPT = """\
You test an explanation of what makes one neuron of a language model fire, by writing new short \
texts (a phrase or a sentence each), all different.
Answer with JSON only: {"prompts": ["...", "..."]}."""

GENERATE_REQUEST_TEMPLATE = """\
Explanation: {explanation}

Write {n} short texts {which}. Answer with JSON only: {{"prompts": [...]}}"""

FIRE = "on which the neuron fires strongly, according to the explanation"
NOT_FIRE = "on which the neuron does NOT fire: ordinary text without what the explanation describes"


# --- Metrics ------------------------------------------------------------------------------


def balanced_accuracy(labels: Sequence[bool], predictions: Sequence[bool]) -> float:
    """The mean over the classes present of the fraction predicted right (NaN with no labels):
    unlike plain accuracy it stays 0.5 for a guesser however unequal the classes are."""
    recalls = []
    for cls in (True, False):
        hits = [p == cls for label, p in zip(labels, predictions, strict=True) if label == cls]
        if hits:
            recalls.append(sum(hits) / len(hits))
    return sum(recalls) / len(recalls) if recalls else math.nan


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """The probability that a random positive scores above a random negative, ties counting half
    (Mann-Whitney U over average ranks); NaN when either class is empty."""
    positive = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(scores, dtype=float))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _json_number(value: float) -> float | None:
    """A metric as results.json can hold it: NaN (undefined) becomes None."""
    return None if math.isnan(value) else value


# --- Detection ----------------------------------------------------------------------------


def detection_score(
    llm_spec: str, explanation: str, high: Sequence[str], low: Sequence[str], per_call: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Balanced accuracy of the LLM telling `high` from `low` prompts with only `explanation`.

    The prompts are shuffled (by `seed`) and shown `per_call` at a time. An answer that is not a
    list of exactly one boolean per prompt leaves that call's prompts unanswered: the accuracy is
    over the answered ones, and `n_answered` says how many that was.
    """
    spec = resolve_llm(llm_spec)
    items = [(p, True) for p in high] + [(p, False) for p in low]
    random.Random(seed).shuffle(items)
    chunks = [items[i : i + per_call] for i in range(0, len(items), per_call)]
    answers: list[bool | None] = []
    for index, chunk in enumerate(chunks):
        prompts = [p for p, _ in chunk]
        answer = ask_json(spec, _detect_request(explanation, prompts), _fires_schema(len(prompts)), seed=seed + index)
        answers += _fires(answer, len(prompts))
    labels = [label for (_, label), a in zip(items, answers) if a is not None]
    verdicts = [a for a in answers if a is not None]
    return {
        "balanced_accuracy": _json_number(balanced_accuracy(labels, verdicts)),
        "auroc": None,
        "n_high": len(high),
        "n_low": len(low),
        "n_answered": len(verdicts),
        "llm_calls": len(chunks),
        "examples": [{"prompt": p, "high": label, "fires": a} for (p, label), a in zip(items, answers)],
    }


def _detect_request(explanation: str, prompts: Sequence[str]) -> list[BaseMessage]:
    shown = "\n\n".join(f"Text {i}: {p}" for i, p in enumerate(prompts, 1))
    human = DETECT_REQUEST_TEMPLATE.format(explanation=explanation, examples=shown, n=len(prompts))
    return [SystemMessage(DETECT_SYSTEM_PROMPT), HumanMessage(human)]


def _fires_schema(n: int) -> dict[str, Any]:
    """Exactly `n` booleans: a grammar built from it cannot answer the wrong length."""
    fires = {"type": "array", "items": {"type": "boolean"}, "minItems": n, "maxItems": n}
    return {"type": "object", "properties": {"fires": fires}, "required": ["fires"]}


def _fires(answer: JsonAnswer, n: int) -> list[bool | None]:
    """The answer's verdicts, or n Nones when it is not a list of n booleans (0/1 count too)."""
    verdicts = (answer.value or {}).get("fires")
    if isinstance(verdicts, list) and len(verdicts) == n and all(v in (True, False) for v in verdicts):
        return [bool(v) for v in verdicts]
    return [None] * n


# --- Generation ---------------------------------------------------------------------------


def generation_score(
    llm_spec: str, explanation: str, measure: Callable[[list[str]], list[float]], n: int = 8, seed: int = 0
) -> dict[str, Any]:
    """How much higher prompts written to fire per `explanation` measure than prompts written not to.

    One LLM call writes (up to) `n` firing prompts, another `n` ordinary ones; `measure` gives each
    prompt's activation (a non-finite value drops that prompt). `ratio` is mean_fire / mean_not,
    None unless mean_not is positive (a ratio to a value near or below zero means nothing).
    """
    spec = resolve_llm(llm_spec)
    fire = _generated(spec, explanation, FIRE, n, seed)
    not_fire = _generated(spec, explanation, NOT_FIRE, n, seed + 1)
    values = measure(fire + not_fire) if fire or not_fire else []
    rows = [
        {"prompt": p, "fire": intended, "activation": float(v)}
        for p, intended, v in zip(fire + not_fire, [True] * len(fire) + [False] * len(not_fire), values, strict=True)
        if math.isfinite(v)
    ]
    fire_values = [r["activation"] for r in rows if r["fire"]]
    not_values = [r["activation"] for r in rows if not r["fire"]]
    mean_fire = float(np.mean(fire_values)) if fire_values else None
    mean_not = float(np.mean(not_values)) if not_values else None
    return {
        "auroc": _json_number(auroc([r["fire"] for r in rows], [r["activation"] for r in rows])),
        "mean_fire": mean_fire,
        "mean_not": mean_not,
        "ratio": mean_fire / mean_not if mean_fire is not None and mean_not is not None and mean_not > 0 else None,
        "n_fire": len(fire_values),
        "n_not": len(not_values),
        "llm_calls": 2,
        "prompts": rows,
    }


def _generated(spec: str, explanation: str, which: str, n: int, seed: int) -> list[str]:
    """Up to `n` distinct prompts the LLM wrote: its JSON list, or its lines when it wrote no JSON
    (parse_prompts reads both, the proposer's parser of one prompt per line)."""
    human = GENERATE_REQUEST_TEMPLATE.format(explanation=explanation, n=n, which=which)
    messages = [SystemMessage(GENERATE_SYSTEM_PROMPT), HumanMessage(human)]
    return parse_prompts(ask_json(spec, messages, prompts_schema(n, MAX_GENERATED_CHARS), seed=seed).raw, n)


# --- Both, with a control -----------------------------------------------------------------


def score_explanation(
    llm_spec: str,
    explanation: str,
    high: Sequence[str],
    low: Sequence[str],
    measure: Callable[[list[str]], list[float]] | None = None,
    control: str = CONTROL_EXPLANATION,
    per_call: int = 5,
    n: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Detection (and generation, given `measure`) of `explanation` and of `control` on the same
    prompts and seeds: {"explanation": row, "control": row}, each row {"text", "detection",
    "generation"} (generation None without `measure`). Plain JSON-serialisable dicts."""
    spec = resolve_llm(llm_spec)

    def row(text: str) -> dict[str, Any]:
        return {
            "text": text,
            "detection": detection_score(spec, text, high, low, per_call=per_call, seed=seed),
            "generation": generation_score(spec, text, measure, n=n, seed=seed) if measure else None,
        }

    return {"explanation": row(explanation), "control": row(control)}

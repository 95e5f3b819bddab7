"""How good is an explanation? Score it on prompts it was not written from, beside a control.

Detection (delphi): the LLM sees only the explanation and held-out prompts, high and low mixed,
and says which ones fire; balanced accuracy says how well the explanation tells them apart.
Generation: the LLM writes prompts that should and should not fire per the explanation, and the
subject model measures them; AUROC and the mean activations say whether the explanation is
causal enough to write new firing text. Each score comes with the same score of a control
explanation (a generic sentence), so a reader sees what chance gives on the same prompts.

Detection's AUROC needs a probability per example: where the LLM reports log-probabilities (the
embedded llama.cpp does; Ollama 0.12.11 and later does), each verdict's probability of `true` is read
from the alternatives at the token where the verdict starts (delphi reads its 0/1 answers the
same way). Where it does not, `auroc` is None and balanced accuracy is the score.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from neuron_search.services.explain.structured import JsonAnswer, ask_json
from neuron_search.services.llm.prompt_parsing import parse_prompts
from neuron_search.services.llm.proposer import prompts_schema, resolve_llm

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
    probabilities: list[float | None] = []
    for index, chunk in enumerate(chunks):
        prompts = [p for p, _ in chunk]
        request = _detect_request(explanation, prompts)
        answer = ask_json(spec, request, _fires_schema(len(prompts)), seed=seed + index, top_logprobs=TOP_LOGPROBS)
        verdicts = _fires(answer, len(prompts))
        answers += verdicts
        chances = verdict_probabilities(answer.raw, answer.logprobs, len(prompts)) if answer.logprobs else None
        probabilities += chances if chances and None not in verdicts else [None] * len(prompts)
    labels = [label for (_, label), a in zip(items, answers) if a is not None]
    verdicts = [a for a in answers if a is not None]
    scored = [(label, p) for (_, label), p in zip(items, probabilities) if p is not None]
    return {
        "balanced_accuracy": _json_number(balanced_accuracy(labels, verdicts)),
        "auroc": _json_number(auroc([label for label, _ in scored], [p for _, p in scored])) if scored else None,
        "n_high": len(high),
        "n_low": len(low),
        "n_answered": len(verdicts),
        "n_scored": len(scored),
        "llm_calls": len(chunks),
        "examples": [
            {"prompt": p, "high": label, "fires": a, "p_fires": chance}
            for (p, label), a, chance in zip(items, answers, probabilities)
        ],
    }


# Alternatives asked for at each answer token (OpenAI's API allows up to 20).
TOP_LOGPROBS = 20


def verdict_probabilities(raw: str, logprobs: Sequence[dict[str, Any]], n: int) -> list[float] | None:
    """For each of the `n` booleans of a {"fires": [...]} answer, the probability the LLM gave `true`,
    read at the token where the verdict starts: the mass of the alternatives there that would start
    `true`, over that of those that would start either literal (the token it wrote counts as one).
    An alternative shares the written token's text up to where the verdict starts, and what follows
    decides: "t..." is true, "f..." false, anything else neither. A literal with no alternative there
    has probability 0. None when the tokens do not spell `raw` (up to whitespace around it) or it
holds no list of n literals.
    """
    tokens = [entry.get("token", "") for entry in logprobs]
    text = "".join(tokens)  # may hold whitespace around the answer that the chat model strips
    if text.strip() != raw.strip():
        return None
    opening = re.search(r'"fires"\s*:\s*\[', text)
    if not opening:
        return None
    closing = text.find("]", opening.end())
    starts = [opening.end() + m.start() for m in re.finditer(r"\b(?:true|false)\b", text[opening.end() : closing if closing >= 0 else None])]
    if len(starts) != n:
        return None
    ends = list(np.cumsum([len(t) for t in tokens]))
    out = []
    for start in starts:
        index = int(np.searchsorted(ends, start, side="right"))  # the token holding the literal's first letter
        entry = logprobs[index]
        offset = start - (ends[index] - len(tokens[index]))
        written = tokens[index]
        mass = {"t": 0.0, "f": 0.0}
        seen: set[str] = set()
        for alternative in [{"token": written, "logprob": entry.get("logprob")}, *entry.get("top_logprobs", [])]:
            text, logprob = alternative.get("token", ""), alternative.get("logprob")
            if text in seen or logprob is None or text[:offset] != written[:offset] or len(text) <= offset:
                continue
            seen.add(text)
            first = text[offset]
            if first in mass:
                mass[first] += math.exp(logprob)
        total = mass["t"] + mass["f"]
        out.append(mass["t"] / total if total > 0 else 0.5)
    return out


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
    real_text: tuple[Sequence[str], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Detection (and generation, given `measure`) of `explanation` and of `control` on the same
    prompts and seeds: {"explanation": row, "control": row}, each row {"text", "detection",
    "generation", "real_text"} (generation None without `measure`). `real_text`, (high, low) dataset
    snippets, adds detection on real text ("real_text", None without it). Plain JSON-serialisable dicts."""
    spec = resolve_llm(llm_spec)

    def row(text: str) -> dict[str, Any]:
        return {
            "text": text,
            "detection": detection_score(spec, text, high, low, per_call=per_call, seed=seed),
            "generation": generation_score(spec, text, measure, n=n, seed=seed) if measure else None,
            "real_text": detection_score(spec, text, *real_text, per_call=per_call, seed=seed) if real_text else None,
        }

    return {"explanation": row(explanation), "control": row(control)}

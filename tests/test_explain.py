"""Explaining and scoring: held-out prompts are new to the explainer, the metrics are right, and
detection and generation give 1 to a perfect judge, chance to a guesser and to the control."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from neuron_search.testing.helpers import WORDS, scripted
from neuron_search.services.explain.examples import format_example, split_examples
from neuron_search.services.explain.explainer import OPENING, SCHEMA, build_explain_request, explain
from neuron_search.services.explain.scoring import (
    CONTROL_EXPLANATION,
    auroc,
    balanced_accuracy,
    detection_score,
    generation_score,
    score_explanation,
    verdict_probabilities,
)
from neuron_search.services.explain.structured import ask_json
from neuron_search.services.llm.proposer import register_chat_model


def record(prompt: str, values: list[float], iteration: int = 1) -> dict[str, Any]:
    """A stored record whose tokens are the prompt's words (with their spaces)."""
    words = prompt.split(" ")
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    assert len(values) == len(tokens)
    peak = max(range(len(values)), key=values.__getitem__)
    return dict(
        iteration=iteration, slot=0, source="llm", prompt=prompt, activation=values[peak], token=tokens[peak],
        tokens=tokens, values=values, error="", xent=None, peak=peak,
    )  # fmt: skip


def finding(r: dict[str, Any]) -> str:
    return "".join(r["tokens"][: r["peak"] + 1])


def run_records(seed: int = 0) -> list[dict[str, Any]]:
    """120 prompts, each also stored with words after its peak (the same finding) and again verbatim,
    plus unmeasured ones."""
    rng = random.Random(seed)
    records = []
    for i in range(120):
        words = rng.sample(WORDS, 3) + [f"w{i}"]
        values = [rng.uniform(-0.2, 0.5) for _ in words[:-1]] + [i / 10]
        prompt = " ".join(words)
        records += [
            record(prompt, values),
            record(prompt + " and then more", values + [0.0, 0.0, 0.0]),  # same finding, other prompt
            record(prompt, values, iteration=2),  # the same prompt measured again
        ]
    failed = record("never measured", [0.0, 0.0]) | {"activation": None, "peak": None}
    return records + [failed] * 3


# --- Which records go where -----------------------------------------------------------------


def test_held_out_never_shares_a_prompt_or_finding_with_the_explainer():
    explainer, high, low = split_examples(run_records(), n_explain_top=10, n_explain_sample=10, n_holdout=20)
    assert (len(explainer), len(high), len(low)) == (20, 20, 20)
    groups = [explainer, high, low]
    everything = [r for group in groups for r in group]
    # Within and across the three lists, no two records share a prompt or a finding.
    assert len({r["prompt"] for r in everything}) == len(everything)
    assert len({finding(r) for r in everything}) == len(everything)
    assert all(r["activation"] is not None for r in everything)
    # The explainer sees the very top; held-out high lies above held-out low.
    assert [r["activation"] for r in explainer[:10]] == [i / 10 for i in range(119, 109, -1)]
    assert min(r["activation"] for r in high) > max(r["activation"] for r in low)
    # A finding is shown in its shortest form.
    assert not any(r["prompt"].endswith(" and then more") for r in everything)


def test_a_prompt_and_its_tail_after_the_peak_are_one_finding():
    base = record("the big number 7", [0.1, 0.2, 0.3, 5.0])
    tail = record("the big number 7 and more words", [0.1, 0.2, 0.3, 5.0, 0.0, 0.0, 0.0])
    others = [record(f"plain text {i}", [0.0, 0.1, i / 100]) for i in range(40)]
    explainer, high, low = split_examples([tail, *others, base], n_explain_top=1, n_explain_sample=0, n_holdout=20)
    assert explainer == [base]
    assert all(finding(r) != "the big number 7" for r in high + low)


def test_the_split_is_deterministic_for_a_seed():
    records = run_records()
    assert split_examples(records, seed=3) == split_examples(list(reversed(records)), seed=3)
    assert split_examples(records, seed=3) != split_examples(records, seed=4)


def test_a_small_run_serves_the_explainer_first():
    records = [record(f"a b {i}", [0.0, 0.0, float(i)]) for i in range(25)]
    explainer, high, low = split_examples(records, n_explain_top=10, n_explain_sample=10, n_holdout=20)
    assert (len(explainer), len(high), len(low)) == (20, 2, 2)


# --- How an example is shown ----------------------------------------------------------------


def test_format_example_marks_strong_tokens_and_scales_to_the_run_max():
    r = record("The cat sat on", [0.1, 2.0, 1.2, -0.5])
    assert format_example(r, scale_max=4.0) == 'The<< cat sat>> on\nActivations: (" cat" : 5), (" sat" : 3)'
    apart = record("a b c", [1.0, 0.2, 0.5])
    assert format_example(apart, scale_max=0.5) == '<<a>> b<< c>>\nActivations: ("a" : 10), (" c" : 10)'
    dull = record("x y", [-0.3, -0.1])
    assert format_example(dull, scale_max=4.0) == "x y\nActivations: none"


# --- Metrics --------------------------------------------------------------------------------


def test_balanced_accuracy_by_hand():
    assert balanced_accuracy([True, True, False, False], [True, False, False, False]) == 0.75
    # Unequal classes: always answering True is chance, not 0.9.
    assert balanced_accuracy([True] * 9 + [False], [True] * 10) == 0.5
    assert math.isnan(balanced_accuracy([], []))


def test_auroc_by_hand_with_ties():
    labels = [True, True, False, False]
    assert auroc(labels, [3, 4, 1, 2]) == 1.0
    assert auroc(labels, [1, 2, 3, 4]) == 0.0
    # Pairs (pos, neg): (1,2) 0, (1,0) 1, (2,2) 0.5, (2,0) 1 -> 2.5 / 4.
    assert auroc(labels, [1, 2, 2, 0]) == 0.625
    assert auroc(labels, [5, 5, 5, 5]) == 0.5
    assert math.isnan(auroc([True, True], [1, 2]))


# --- Scripted LLMs --------------------------------------------------------------------------


class Replier(BaseChatModel):
    """A chat model whose answer is a function of the last message's text."""

    reply: Callable[[str], str]

    @property
    def _llm_type(self) -> str:
        return "replier"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply(messages[-1].text)))])


def replier(reply: Callable[[str], str]) -> str:
    return register_chat_model(Replier(reply=reply))


class ProbableReplier(BaseChatModel):
    """A chat model that answers {"fires": [...]} with the chance of `true` it gives each text,
    `chances(request)`, reported as llama.cpp and Ollama report log-probabilities: one entry per
    answer token with its likeliest alternatives. Each verdict is the likelier literal."""

    chances: Callable[[str], list[float]]

    @property
    def _llm_type(self) -> str:
        return "probable-replier"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        chances = self.chances(messages[-1].text)
        tokens = [{"token": '{"', "logprob": -0.01, "top_logprobs": []}, {"token": 'fires": [', "logprob": -0.01, "top_logprobs": []}]
        for i, p in enumerate(chances):
            literal = "true" if p >= 0.5 else "false"
            alternatives = [{"token": "true", "logprob": math.log(max(p, 1e-9))}, {"token": "f", "logprob": math.log(max(1 - p, 1e-9))}]
            first = literal if literal == "true" else "f"
            tokens.append({"token": (", " if i else "") + first, "logprob": -0.1, "top_logprobs": [
                {"token": (", " if i else "") + a["token"], "logprob": a["logprob"]} for a in alternatives
            ]})  # fmt: skip
            if literal == "false":
                tokens.append({"token": "alse", "logprob": -0.01, "top_logprobs": []})
        tokens.append({"token": "]}", "logprob": -0.01, "top_logprobs": []})
        text = "".join(t["token"] for t in tokens)
        message = AIMessage(content=text, response_metadata={"logprobs": tokens})
        return ChatResult(generations=[ChatGeneration(message=message)])


def probable(chances: Callable[[str], list[float]]) -> str:
    return register_chat_model(ProbableReplier(chances=chances))


def shown_texts(request: str) -> list[str]:
    return re.findall(r"^Text \d+: (.*)$", request, re.MULTILINE)


def perfect_judge(request: str) -> str:
    """Says a text fires exactly when it holds "seven" and the explanation is about sevens."""
    about_sevens = "seven" in request.split("\n", 1)[0]
    return json.dumps({"fires": [about_sevens and "seven" in t for t in shown_texts(request)]})


HIGH = [f"seven is number {i}" for i in range(23)]
LOW = [f"a plain sentence {i}" for i in range(17)]


def test_a_perfect_judge_scores_one_and_the_control_chance():
    scores = score_explanation(replier(perfect_judge), "The word seven.", HIGH, LOW, per_call=5)
    detection = scores["explanation"]["detection"]
    assert detection["balanced_accuracy"] == 1.0
    assert detection["auroc"] is None  # no probabilities from a boolean answer
    assert (detection["n_high"], detection["n_low"], detection["n_answered"], detection["llm_calls"]) == (23, 17, 40, 8)
    assert scores["control"]["text"] == CONTROL_EXPLANATION
    assert scores["control"]["detection"]["balanced_accuracy"] == 0.5
    assert scores["explanation"]["generation"] is None
    json.dumps(scores, allow_nan=False)


def test_a_guessing_judge_scores_about_one_half():
    rng = random.Random(0)
    guesser = replier(lambda request: json.dumps({"fires": [rng.random() < 0.5 for _ in shown_texts(request)]}))
    high = [f"seven {i}" for i in range(100)]
    low = [f"plain {i}" for i in range(100)]
    detection = detection_score(guesser, "The word seven.", high, low)
    assert detection["n_answered"] == 200
    # One recall over 100 guesses has a standard deviation of 0.05; their mean, ~0.035.
    assert abs(detection["balanced_accuracy"] - 0.5) <= 0.1


def test_detection_auroc_from_log_probabilities_is_one_for_a_sure_judge_and_about_half_for_chance():
    # The sure judge is right but never certain: its chances for texts with "seven" are all above those without.
    rng = random.Random(0)
    sure = probable(lambda request: [rng.uniform(0.55, 0.95) if "seven" in t else rng.uniform(0.05, 0.45) for t in shown_texts(request)])
    detection = detection_score(sure, "The word seven.", HIGH, LOW)
    assert (detection["auroc"], detection["balanced_accuracy"], detection["n_scored"]) == (1.0, 1.0, 40)
    assert all(e["p_fires"] is not None and (e["p_fires"] > 0.5) == e["high"] for e in detection["examples"])
    # A judge whose chances ignore the texts: AUROC about 0.5 (200 texts; its standard deviation is ~0.04).
    coin = probable(lambda request: [rng.random() for _ in shown_texts(request)])
    high, low = [f"seven {i}" for i in range(100)], [f"plain {i}" for i in range(100)]
    assert abs(detection_score(coin, "The word seven.", high, low)["auroc"] - 0.5) <= 0.1


def test_verdict_probabilities_read_the_token_where_each_literal_starts():
    entry = lambda token, logprob, *alternatives: {"token": token, "logprob": logprob, "top_logprobs": [  # noqa: E731
        {"token": t, "logprob": lp} for t, lp in alternatives
    ]}  # fmt: skip
    logprobs = [
        entry('{"fires": [', -0.1),
        # The grammar forced "f" (the model wanted "{"): alternatives that start neither literal do not count.
        entry("f", -2.0, ("{", -0.2), ("true", math.log(0.1)), ("f", -2.0)),
        entry("alse", -0.01),
        # A token that holds the comma and the first letter: alternatives must share the comma.
        entry(", t", math.log(0.3), (", t", math.log(0.3)), (", f", math.log(0.1)), (" t", -0.5), (",", -0.3)),
        entry("rue", -0.01),
        # No alternative that starts false: the probability of true is 1.
        entry(", true", -0.05, (", true", -0.05), ("]", -3.0)),
        entry("]}", -0.01),
    ]
    raw = "".join(e["token"] for e in logprobs)
    assert json.loads(raw) == {"fires": [False, True, True]}
    chances = verdict_probabilities(raw, logprobs, 3)
    assert chances == pytest.approx([0.1 / (0.1 + math.exp(-2.0)), 0.75, 1.0])
    assert verdict_probabilities(raw, logprobs, 2) is None  # not the number of texts asked about
    assert verdict_probabilities(raw + " x", logprobs, 3) is None  # the tokens do not spell the answer
    assert verdict_probabilities(raw.strip() + "\n", logprobs + [entry("\n  ", -0.1)], 3) == chances  # whitespace around it


def test_answers_of_the_wrong_shape_are_unanswered_not_errors():
    one_short = replier(lambda request: json.dumps({"fires": [True] * (len(shown_texts(request)) - 1)}))
    detection = detection_score(one_short, "x", HIGH[:5], LOW[:5])
    assert (detection["n_answered"], detection["balanced_accuracy"], detection["llm_calls"]) == (0, None, 2)
    assert all(e["fires"] is None for e in detection["examples"])
    prose = detection_score(scripted(["I think the first one does."]), "x", HIGH[:3], LOW[:3])
    assert prose["n_answered"] == 0


def test_a_failing_llm_costs_answers_not_the_run():
    def broken(request: str) -> str:
        raise RuntimeError("server went away")

    assert detection_score(replier(broken), "x", HIGH[:3], LOW[:3])["n_answered"] == 0
    assert explain(replier(broken), [record("a b", [0.0, 1.0])], scale_max=1.0) == ""


def generator(request: str) -> str:
    kind = "plain words" if "NOT fire" in request else "seven seven"
    return json.dumps({"prompts": [f"{kind} {i}" for i in range(8)]})


def sevens(prompts: list[str]) -> list[float]:
    return [3.0 if "seven" in p else 0.5 for p in prompts]


def test_generation_where_firing_prompts_measure_higher():
    scores = generation_score(replier(generator), "The word seven.", sevens, n=8)
    assert scores["auroc"] == 1.0
    assert scores["ratio"] == 6.0
    assert (scores["n_fire"], scores["n_not"], scores["llm_calls"]) == (8, 8, 2)
    assert scores["prompts"][0] == {"prompt": "seven seven 0", "fire": True, "activation": 3.0}


def test_generation_reads_a_free_text_answer_and_drops_unmeasured_prompts():
    lines = scripted(["1. seven up\n2. seven down\n3. seven out", "Here are the texts:\n- a cat\n- a dog"])
    scores = generation_score(lines, "x", lambda ps: [math.nan if "out" in p else s for p, s in zip(ps, sevens(ps))])
    assert [p["prompt"] for p in scores["prompts"]] == ["seven up", "seven down", "a cat", "a dog"]
    assert (scores["n_fire"], scores["n_not"], scores["auroc"]) == (2, 2, 1.0)


# --- The explainer --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "explanation"),
    [
        ('{"explanation": "Multi-digit numbers."}', "Multi-digit numbers."),
        ('Sure:\n```json\n{"explanation": "Numbers"}\n```', "Numbers"),
        ('Looking at them...\n[EXPLANATION]: "Powers of two"\nDone.', "Powers of two"),
        ("They are lists.\n\n'Comma-separated lists'\n", "Comma-separated lists"),
        ("", ""),
    ],
)
def test_explain_reads_json_then_free_text(answer, explanation):
    assert explain(scripted([answer]), [record("1 2 4", [0.0, 1.0, 2.0])], scale_max=2.0) == explanation


def test_the_explainer_sees_marked_examples():
    seen: list[str] = []
    spy = replier(lambda request: seen.append(request) or '{"explanation": "e"}')
    explain(spy, [record("a b", [0.0, 1.0]), record("c d", [2.0, 0.0])], scale_max=2.0)
    assert 'Text 1: a<< b>>\nActivations: (" b" : 5)' in seen[0]
    assert 'Text 2: <<c>> d\nActivations: ("c" : 10)' in seen[0]


def test_ollama_gets_the_schema_without_the_pattern_it_may_reject_and_llama_cpp_gets_all_of_it():
    from langchain_ollama import ChatOllama

    from neuron_search.services.llm.embedded_llm import ChatLlamaCpp
    from neuron_search.services.llm.proposer import constrained

    sent = constrained(ChatOllama(model="llama3.1"), SCHEMA).format
    assert "pattern" not in json.dumps(sent) and sent["properties"]["explanation"]["type"] == "string"
    assert "pattern" in SCHEMA["properties"]["explanation"]  # the schema itself is left as it was
    llama = constrained(ChatLlamaCpp.model_construct(), SCHEMA)
    assert llama.response_format["schema"] == SCHEMA


# --- The embedded LLM really answers JSON ---------------------------------------------------


def test_the_embedded_llm_answers_json_of_the_schema():
    short = {**SCHEMA, "properties": {"explanation": {"type": "string", "maxLength": 40}}}
    examples = [record("1 2 4 8", [0.1, 0.5, 1.0, 2.0]), record("The cat sat", [0.0, 0.3, 0.1])]
    answer = ask_json("embedded", build_explain_request(examples, scale_max=2.0), short, max_tokens=64)
    assert isinstance(json.loads(answer.raw)["explanation"], str)
    assert answer.value == json.loads(answer.raw)


def test_the_embedded_llm_explains_in_a_sentence_that_starts_as_asked():
    # A real call with the explainer's own schema: the embedded LLM, which copied a placeholder
    # answer when it could ('Your sentence'), must now begin with the opening the schema enforces.
    examples = [record("1 2 4 8", [0.1, 0.5, 1.0, 2.0]), record("The cat sat", [0.0, 0.3, 0.1])]
    text = explain("embedded", examples, scale_max=2.0)
    assert text.startswith(OPENING + " ") and len(text) > len(OPENING) + 3


def test_the_embedded_llm_reports_the_chance_of_each_verdict():
    """A real call: llama.cpp's log-probabilities give every verdict of a detection answer a probability."""
    detection = detection_score("embedded", "Numbers and digits.", ["1 2 3 4", "7, 8, 9"], ["the cat sat", "hello there"])
    assert detection["n_answered"] == 4 and detection["n_scored"] == 4
    assert all(0.0 <= e["p_fires"] <= 1.0 for e in detection["examples"])
    assert detection["auroc"] is not None

"""Ask the LLM what the neuron detects: from the examples it fired on (delphi's explainer, `explain`),
or from the grounded view (`explain_grounded`: one prompt per theme, real snippets, the peak-token
table and the logit effects; services/explain/grounded_view.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from neuron_search.services.explain.examples import format_example
from neuron_search.services.explain.grounded_view import ExplainerView
from neuron_search.services.explain.structured import ask_json
from neuron_search.services.llm.prompt_parsing import normalize_text
from neuron_search.services.llm.proposer import resolve_llm
from neuron_search.services.storage.record_store import StoredRecord

MAX_EXPLANATION_CHARS = 300  # one sentence; a bound also lets a grammar-constrained answer close
EXPLANATION_MARK = "[EXPLANATION]:"
OPENING = "The neuron fires on"  # every explanation is quotable as "this neuron fires on ..."

# llama.cpp's grammar enforces the pattern, so the embedded LLM's answer starts with OPENING (given
# a placeholder to fill instead, the 135M model copied it on 4 of 5 neurons: 'Your sentence',
# bench/RESULTS.md section 12c); Ollama gets the schema without it (`without_patterns`) and the
# request's words ask for the opening.
SCHEMA = {
    "type": "object",
    "properties": {
        "explanation": {
            "type": "string",
            "pattern": f'^{OPENING} [^"\\\\]{{3,{MAX_EXPLANATION_CHARS - len(OPENING) - 1}}}$',
        }
    },
    "required": ["explanation"],
}

SYSTEM_PROMPT = f"""\
You are an interpretability researcher. You read texts on which one neuron of a language model \
fires and say, in one short sentence, what they have in common that makes it fire.
In each text the tokens where the neuron fires most are between << and >>; the line after it \
gives each such token's activation from 0 (none) to 10 (the strongest seen).
Describe the pattern (a kind of word, a topic, a format, a position), not single examples, and \
do not mention the << >> marks. No lists, no alternatives.
Answer with JSON only, one key "explanation" whose value is a sentence that starts with \
"{OPENING}"."""

REQUEST_TEMPLATE = f"""\
Texts on which the neuron fires:

{{examples}}

What makes this neuron fire? Answer with JSON only: {{{{"explanation": "{OPENING} ..."}}}}"""


def build_explain_request(examples: Sequence[StoredRecord], scale_max: float) -> list[BaseMessage]:
    """The messages of the explainer's call: the examples in delphi's marked format."""
    shown = "\n\n".join(f"Text {i}: {format_example(r, scale_max)}" for i, r in enumerate(examples, 1))
    return [SystemMessage(SYSTEM_PROMPT), HumanMessage(REQUEST_TEMPLATE.format(examples=shown))]


def explain(llm_spec: str, examples: Sequence[StoredRecord], scale_max: float, seed: int = 0) -> str:
    """The LLM's one-sentence explanation of the examples ("" when its answer held none)."""
    return _sentence(ask_json(resolve_llm(llm_spec), build_explain_request(examples, scale_max), SCHEMA, seed=seed))


def free_text_explanation(raw: str) -> str:
    """The explanation of an answer that is not JSON: its `[EXPLANATION]:` line (delphi's format),
    else its last non-empty line, without surrounding quotes."""
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    marked = [line for line in lines if line.upper().startswith(EXPLANATION_MARK)]
    line = marked[-1][len(EXPLANATION_MARK) :] if marked else (lines[-1] if lines else "")
    return line.strip().strip("\"'“”‘’`").strip()


# --- The grounded explainer (issue 35, item 5) ------------------------------------------------

GROUNDED_SYSTEM_PROMPT = f"""\
You are an interpretability researcher. You read evidence about one neuron of a language model and \
say, in one short sentence, what makes it fire.
The evidence: texts on which it fires (one per group of near-copies), real text on which it fires \
most, the tokens it fires on most across them, and the tokens its output makes more or less likely.
In each text the tokens where the neuron fires most are between << and >>; the line after it \
gives each such token's activation from 0 (none) to 10 (the strongest seen).
Describe the pattern the evidence shares (a token, a kind of word, a format, a context), not single \
examples, and do not mention the << >> marks. No lists, no alternatives.
Answer with JSON only, one key "explanation" whose value is a sentence that starts with \
"{OPENING}"."""

GROUNDED_TEMPLATE = f"""\
Texts on which the neuron fires most, one per group of near-copies:

{{themes}}
{{sampled}}{{real}}{{peaks}}{{logits}}
What makes this neuron fire? Answer with JSON only: {{{{"explanation": "{OPENING} ..."}}}}"""


def _token(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def peak_lines(table: Mapping[str, Any] | None, rows: int = 10) -> str:
    """The peak-token table as the explainer reads it ("" with no rows)."""
    if not table or not table.get("at_peak"):
        return ""
    at = "; ".join(f"{_token(r['token'])} ({r['count']}x, mean {r['mean_activation']:.2f})" for r in table["at_peak"][:rows])
    before = "; ".join(f"{_token(r['token'])} ({r['count']}x)" for r in table.get("before_peak", [])[:rows])
    lines = f"\nTokens the neuron fires on most in these texts: {at}\n"
    return lines + (f"Tokens right before those: {before}\n" if before else "")


def logit_lines(effects: Mapping[str, Any] | None, rows: int = 10) -> str:
    """The neuron's direct logit effects as the explainer reads them ("" without them)."""
    if not effects or not effects.get("promoted"):
        return ""
    promoted = ", ".join(_token(e["token"]) for e in effects["promoted"][:rows])
    suppressed = ", ".join(_token(e["token"]) for e in effects.get("suppressed", [])[:rows])
    return f"\nWhen it fires, its output makes these next tokens more likely: {promoted}\n" + (
        f"and these less likely: {suppressed}\n" if suppressed else ""
    )


def build_grounded_request(view: ExplainerView, logit_effects: Mapping[str, Any] | None, scale_max: float) -> list[BaseMessage]:
    """The grounded explainer's messages: one prompt per theme (with its variants and their range), a
    sample of weaker prompts, the shown real snippets, the peak-token table and the logit effects."""
    themes = "\n\n".join(
        f"Text {i}"
        + (f" (stands for {t['variants']} near-copies, activations {t['low']:.2f} to {t['high']:.2f})" if t["variants"] > 1 else "")
        + f": {format_example(t['best'], scale_max)}"
        for i, t in enumerate(view.themes, 1)
    )
    first = len(view.themes) + 1
    sampled = "\n\n".join(f"Text {i}: {format_example(r, scale_max)}" for i, r in enumerate(view.sampled, first))
    sampled = f"\nWeaker examples, from across its activations:\n\n{sampled}\n" if sampled else ""
    real = "\n\n".join(f"Snippet {i}: {format_example(r, scale_max)}" for i, r in enumerate(view.real_shown, 1))
    real = f"\nReal text on which it fires most:\n\n{real}\n" if real else ""
    human = GROUNDED_TEMPLATE.format(themes=themes, sampled=sampled, real=real, peaks=peak_lines(view.table), logits=logit_lines(logit_effects))
    return [SystemMessage(GROUNDED_SYSTEM_PROMPT), HumanMessage(human)]


def explain_grounded(llm_spec: str, view: ExplainerView, logit_effects: Mapping[str, Any] | None, scale_max: float, seed: int = 0) -> str:
    """The LLM's one-sentence explanation from the grounded view ("" when its answer held none)."""
    answer = ask_json(resolve_llm(llm_spec), build_grounded_request(view, logit_effects, scale_max), SCHEMA, seed=seed)
    return _sentence(answer)


def _sentence(answer) -> str:
    if answer.value is not None:
        text = answer.value.get("explanation")
        text = text if isinstance(text, str) else ""
    else:
        text = free_text_explanation(answer.raw)
    # What is not text (surrogates, control characters) would break the files the sentence is written to.
    return " ".join(normalize_text(text).split())

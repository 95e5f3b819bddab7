"""Ask the LLM what the neuron detects, from the examples it fired on (delphi's explainer)."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from neuron_search.services.explain.examples import format_example
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
    answer = ask_json(resolve_llm(llm_spec), build_explain_request(examples, scale_max), SCHEMA, seed=seed)
    if answer.value is not None:
        text = answer.value.get("explanation")
        text = text if isinstance(text, str) else ""
    else:
        text = free_text_explanation(answer.raw)
    # What is not text (surrogates, control characters) would break the files the sentence is written to.
    return " ".join(normalize_text(text).split())


def free_text_explanation(raw: str) -> str:
    """The explanation of an answer that is not JSON: its `[EXPLANATION]:` line (delphi's format),
    else its last non-empty line, without surrounding quotes."""
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    marked = [line for line in lines if line.upper().startswith(EXPLANATION_MARK)]
    line = marked[-1][len(EXPLANATION_MARK) :] if marked else (lines[-1] if lines else "")
    return line.strip().strip("\"'“”‘’`").strip()

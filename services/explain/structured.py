"""Ask an LLM for JSON of a given schema, through the LLM's own structured-output support.

A free-text answer from a small model is hard to parse; a schema makes it easy or, where the LLM
enforces it while sampling, certain. llama.cpp (the embedded LLM) turns the schema into a grammar,
Ollama takes it as `format`; any other chat model gets the plain request, whose text asks for the
same JSON. Scoring calls the LLM many times, so one bad answer must cost one data point, never the
run: nothing here raises on what the LLM does.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from langchain_core.messages import BaseMessage

from neuron_search.services.llm.proposer import chat_model, constrained

log = logging.getLogger("neuron_search")


class JsonAnswer(NamedTuple):
    value: dict[str, Any] | None  # the answer's JSON object, None when it held none (or the call failed)
    raw: str  # the answer's text as the LLM wrote it ("" when the call failed)
    # Asked for with top_logprobs and where the LLM reports them: per answer token {"token", "logprob",
    # "top_logprobs": [{"token", "logprob"}, ...]}, the alternatives before any grammar.
    logprobs: list[dict[str, Any]] | None = None


def ask_json(
    llm_spec: str,
    messages: list[BaseMessage],
    schema: dict[str, Any],
    seed: int = 0,
    max_tokens: int | None = None,
    top_logprobs: int | None = None,
) -> JsonAnswer:
    """One call at temperature 0 to the LLM of a resolved spec, asking for JSON of `schema`.

    `max_tokens` caps the answer where the chat model has a cap (llama.cpp's max_tokens, Ollama's
    num_predict); a schema's maxLength and maxItems keep a constrained answer short enough to close.
    `top_logprobs` asks for each answer token's likeliest alternatives (see `constrained`).
    """
    model = constrained(chat_model(llm_spec, temperature=0.0, seed=seed), schema, max_tokens, top_logprobs)
    try:
        answer = model.invoke(messages)
    except Exception as error:  # a failed call is one unanswered question, counted by the caller
        log.warning("The LLM %s failed (%s: %s).", llm_spec, type(error).__name__, error)
        return JsonAnswer(None, "")
    raw = answer.content if isinstance(answer.content, str) else str(answer.content)
    logprobs = answer.response_metadata.get("logprobs") if top_logprobs else None
    return JsonAnswer(parse_json_object(raw), raw, logprobs if isinstance(logprobs, list) and logprobs else None)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object an answer holds: the whole text, or its outermost {...} when the LLM
    wrapped it in chatter or a code fence; None when there is none."""
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    for candidate in (stripped, stripped[start : end + 1] if 0 <= start < end else ""):
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None

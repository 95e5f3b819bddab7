"""The proposers: which LLM writes prompts, the request it gets, and what happens when it fails."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from neuron_search.context import SearchContext
from neuron_search.services.errors import UserError
from neuron_search.state import Record

log = logging.getLogger("neuron_search")

DEFAULT_OLLAMA_MODEL = "llama3.1"
LLM_RETRIES = 3  # tries of one request before the proposer gives up on its LLM
LLM_TIMEOUT_S = 120.0

SYSTEM_PROMPT = """\
You help an interpretability researcher find text that makes one neuron of a language model \
fire as strongly as possible. You propose short, varied text snippets (prompts). You see which \
prompts made the neuron fire most and least, and which were too similar to dull ones. Learn \
from them: keep what the best prompts share, vary everything else, and explore new directions.
Answer with JSON only: {"prompts": ["...", "..."]}, one string per prompt: no numbering, no \
explanations."""

REQUEST_TEMPLATE = """\
Neuron {neuron} in layer {layer} of {model}.
{hint}{hypothesis}
Prompts that made it fire MOST:
{top}

Prompts that made it fire LEAST:
{bottom}
{rejected}
Write {n} new prompts likely to make it fire even more than the best ones above. \
Answer with JSON only, exactly {n} prompts: {{"prompts": [...]}}"""


def _table(records: Sequence[Record]) -> str:
    if not records:
        return "(none yet)"
    # The prompt quoted, as in the JSON answer asked for, and its numbers after it.
    return "\n".join(f'"{r["prompt"]}" (activation {r["activation"]:.3f}, peak at {r["token"]!r})' for r in records)


def build_request(
    ctx: SearchContext, top: Sequence[Record], bottom: Sequence[Record], rejected: Sequence[str], hypothesis: str = ""
) -> list[BaseMessage]:
    """The messages of one LLM call: the neuron, the researcher's hint, the current hypothesis
    (--explain-every), and the records so far."""
    rejected_text = (
        "\nToo similar to dull prompts, so rejected (avoid these):\n" + "\n".join(rejected) + "\n"
        if rejected
        else ""
    )
    human = REQUEST_TEMPLATE.format(
        neuron=ctx.neuron,
        layer=ctx.layer,
        model=ctx.model,
        hint=f"The researcher's notes on this neuron: {ctx.hint}\n" if ctx.hint else "",
        hypothesis=f"Current hypothesis on what it detects: {hypothesis}\nTest it: write prompts that would confirm or refute it.\n"
        if hypothesis
        else "",
        top=_table(top),
        bottom=_table(bottom),
        rejected=rejected_text,
        n=ctx.batch_size,
    )
    return [SystemMessage(SYSTEM_PROMPT), HumanMessage(human)]


# Chat models registered in this process (tests, notebooks): context.llm = "custom:NAME".
_custom_models: dict[str, BaseChatModel] = {}


def register_chat_model(model: BaseChatModel, name: str | None = None) -> str:
    """Make any LangChain chat model usable as a proposer; returns its llm spec."""
    name = name or f"{type(model).__name__}-{id(model):x}"
    _custom_models[name] = model
    return f"custom:{name}"


def ollama_host() -> str:
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    return host if host.startswith("http") else f"http://{host}"


def ollama_problem(model: str) -> str | None:
    """Why Ollama cannot serve `model` right now, or None when it can."""
    host = ollama_host()
    try:
        answer = httpx.get(f"{host}/api/tags", timeout=3.0)
        answer.raise_for_status()
        names = {m.get("name", "") for m in answer.json().get("models", [])}
    except (httpx.HTTPError, ValueError) as error:
        return (
            f"The Ollama server at {host} does not answer ({type(error).__name__}). "
            "Start it with `ollama serve` (or set OLLAMA_HOST to where it runs)"
        )
    if model not in names and f"{model}:latest" not in names:
        return f"The Ollama server at {host} does not have the model {model!r}. Run `ollama pull {model}`"
    return None


_warned: set[str] = set()


def resolve_llm(spec: str) -> str:
    """Turn --llm into a concrete proposer: 'ollama:NAME', 'embedded' or 'custom:NAME'."""
    if spec == "embedded" or spec.startswith("custom:"):
        if spec.startswith("custom:") and spec[7:] not in _custom_models:
            raise UserError(f"No chat model is registered as {spec!r} in this process.")
        return spec
    if spec == "auto":
        problem = ollama_problem(DEFAULT_OLLAMA_MODEL)
        if problem is None:
            return f"ollama:{DEFAULT_OLLAMA_MODEL}"
        if problem not in _warned:  # once per process: a sweep resolves it for every neuron
            _warned.add(problem)
            log.warning("%s; using the embedded LLM instead.", problem)
        return "embedded"
    if spec.startswith("ollama:") and spec[7:]:
        problem = ollama_problem(spec[7:])
        if problem:
            raise UserError(f"{problem}, then run again; or use --llm embedded to run with no server.")
        return spec
    raise UserError(
        f"Unknown --llm {spec!r}. Use 'auto', 'embedded', or 'ollama:NAME' (for example ollama:llama3.1)."
    )


def chat_model(spec: str, temperature: float, seed: int | None) -> BaseChatModel:
    """The LangChain chat model behind a resolved spec."""
    if spec.startswith("custom:"):
        return _custom_models[spec[7:]]
    if spec == "embedded":
        from neuron_search.services.llm.embedded_llm import embedded_chat_model

        return embedded_chat_model(temperature=temperature, seed=seed)
    from langchain_ollama import ChatOllama

    return ChatOllama(
        model=spec[7:],
        base_url=ollama_host(),
        temperature=temperature,
        seed=seed,
        client_kwargs={"timeout": LLM_TIMEOUT_S},
    )


def prompts_schema(n: int, max_chars: int) -> dict[str, Any]:
    """JSON of exactly `n` prompts of 1..max_chars characters: {"prompts": [...]}. Where the LLM
    enforces a schema while sampling, its answer always parses as one list (how many of its prompts
    are usable is measured in bench/RESULTS.md section 11: for the embedded SmolLM2, no more than
    free text)."""
    prompt = {"type": "string", "minLength": 1, "maxLength": max_chars}
    prompts = {"type": "array", "items": prompt, "minItems": n, "maxItems": n}
    return {"type": "object", "properties": {"prompts": prompts}, "required": ["prompts"]}


def constrained(
    model: BaseChatModel, schema: dict[str, Any], max_tokens: int | None = None, top_logprobs: int | None = None
) -> BaseChatModel:
    """A copy of `model` that enforces the JSON `schema` where its backend can (llama.cpp's
    response_format, Ollama's format), else `model` itself, whose request text asks for the same.
    With `top_logprobs`, the copy also reports each answer token's likeliest alternatives with their
    log-probabilities in response_metadata["logprobs"] (llama.cpp does; Ollama does from 0.12.11, an
    older server leaves them out)."""
    from neuron_search.services.llm.embedded_llm import ChatLlamaCpp

    if isinstance(model, ChatLlamaCpp):
        update = {"response_format": {"type": "json_object", "schema": schema}, "max_tokens": max_tokens, "top_logprobs": top_logprobs}
    elif type(model).__name__ == "ChatOllama":  # by name: langchain_ollama loads only for Ollama specs
        update = {"format": without_patterns(schema), "num_predict": max_tokens, "top_logprobs": top_logprobs, "logprobs": top_logprobs and True}
    else:
        return model
    return model.model_copy(update={key: value for key, value in update.items() if value is not None})


def without_patterns(schema: Any) -> Any:
    """`schema` without its strings' regular-expression `pattern`s, which Ollama has answered with
    "invalid JSON schema in format" (ollama/ollama#8185, #8325): the request text still asks for
    what the pattern enforced."""
    if isinstance(schema, dict):
        return {key: without_patterns(value) for key, value in schema.items() if not (key == "pattern" and isinstance(value, str))}
    if isinstance(schema, list):
        return [without_patterns(value) for value in schema]
    return schema


class Proposer:
    """Calls the run's LLM with bounded retries; if Ollama fails mid-run, switches to the embedded LLM."""

    def __init__(self, spec: str, temperature: float) -> None:
        self.spec = resolve_llm(spec)
        self.temperature = temperature

    def propose(self, messages: list[BaseMessage], seed: int, schema: dict[str, Any] | None = None) -> str | None:
        """The LLM's answer as text (JSON of `schema` where the LLM enforces one), or None when it
        failed even after retries."""
        for attempt in range(LLM_RETRIES):
            try:
                model = chat_model(self.spec, self.temperature, seed)
                answer = (constrained(model, schema) if schema else model).invoke(messages)
                return answer.content if isinstance(answer.content, str) else str(answer.content)
            except Exception as error:  # any LLM failure is survivable: the search goes on
                last_error = error
                if attempt + 1 < LLM_RETRIES:
                    time.sleep(0.5 * 2**attempt)
        switch = self.spec.startswith("ollama:")
        log.warning(
            "The LLM %s failed %d times (%s: %s)%s",
            self.spec,
            LLM_RETRIES,
            type(last_error).__name__,
            last_error,
            "; switching to the embedded LLM for the rest of this run." if switch else ".",
        )
        if switch:
            self.spec = "embedded"
        return None

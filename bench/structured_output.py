"""Usable prompts per LLM call: the proposer's request answered as free text, and as JSON of exactly
--batch-size prompts through the LLM's own schema support (issue #13, item 4).

    python bench/structured_output.py [--calls 10] [--smoke]

The embedded SmolLM2 (llama.cpp) gets the generate node's request for one fixed set of top and
bottom prompts, `--calls` times per variant with seeds 0..calls-1 at the default temperature.
The free-text variant is what the search did before it asked for JSON (bench/RESULTS.md section
11): the request asks for one prompt per line (FREE_TEXT_SYSTEM, FREE_TEXT_ASK) and the answer is
read by that search's line-by-line parser, bench/original_prompt_parsing.py. The JSON variant is
what the search does now: its request and the schema, its parser (services/llm/prompt_parsing.py).
"New" leaves out prompts that copy one the request showed. Side by side in one run, so the
machine's load touches both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401 (sets up the import path and offline settings)
import original_prompt_parsing
from common import machine
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from neuron_search.context import SearchContext
from neuron_search.nodes.generate import SCHEMA_MAX_CHARS
from neuron_search.services.llm import prompt_parsing
from neuron_search.services.llm.proposer import REQUEST_TEMPLATE, build_request, chat_model, constrained, prompts_schema

TOP = [("1, 2, 4, 8, 16, 32", 2.31, " 32"), ("The year 1969 was", 1.87, " 1969"), ("Call 555-0199 now", 1.52, "0199"), ("x = 3.14159", 1.20, "159")]
BOTTOM = [("Once upon a time", -0.12, " time"), ("Hello, how are you?", -0.08, "?")]

# The proposer's request before it asked for JSON: its system prompt, and its request's last sentence.
FREE_TEXT_SYSTEM = """\
You help an interpretability researcher find text that makes one neuron of a language model \
fire as strongly as possible. You propose short, varied text snippets (prompts). You see which \
prompts made the neuron fire most and least, and which were too similar to dull ones. Learn \
from them: keep what the best prompts share, vary everything else, and explore new directions.
Answer with the prompts only, one per line: no numbering, no quotes, no explanations."""
FREE_TEXT_ASK = "One prompt per line, nothing else."


def free_text_request(messages: list[BaseMessage], n: int) -> list[BaseMessage]:
    """The search's request with the words that ask for JSON replaced by the free-text ones."""
    ask = REQUEST_TEMPLATE.rsplit("above. ", 1)[1].format(n=n)  # the template's last sentence
    system, human = messages
    assert human.content.endswith(ask), "the proposer's request no longer ends as this bench expects"
    return [SystemMessage(FREE_TEXT_SYSTEM), HumanMessage(human.content[: -len(ask)] + FREE_TEXT_ASK)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="a scripted LLM instead of the embedded one, a second")
    args = parser.parse_args()
    llm = "embedded"
    if args.smoke:
        from neuron_search.testing.helpers import fresh_answers, scripted

        llm, args.calls = scripted(fresh_answers(4, per_answer=args.batch_size)), 2
    ctx = SearchContext(model="embedded", layer=6, neuron=123, llm="embedded", batch_size=args.batch_size)
    record = lambda p, a, t: dict(prompt=p, activation=a, token=t, source="seed", iteration=0)  # noqa: E731
    top, bottom = [record(*r) for r in TOP], [record(*r) for r in BOTTOM]
    shown = {r["prompt"] for r in top + bottom}
    messages = build_request(ctx, top, bottom, [])
    variants = (
        ("free text", free_text_request(messages, args.batch_size), None, original_prompt_parsing.parse_prompts),
        (f"JSON, exactly {args.batch_size}", messages, prompts_schema(args.batch_size, SCHEMA_MAX_CHARS), prompt_parsing.parse_prompts),
    )
    print(f"llm {'embedded SmolLM2' if not args.smoke else 'scripted'}, batch {args.batch_size}, {args.calls} calls a variant")
    print(f"machine before: {machine()}\n")
    print("| request | usable prompts a call (mean) | per call | new (not a shown prompt) | s a call |")
    print("|---|---:|---|---:|---:|")
    for name, request, schema, parse_prompts in variants:
        counts, new, seconds = [], [], 0.0
        for seed in range(args.calls):
            model = chat_model(llm if args.smoke else "embedded", ctx.temperature, seed)
            started = time.perf_counter()
            answer = (constrained(model, schema) if schema else model).invoke(request).content
            seconds += time.perf_counter() - started
            prompts = parse_prompts(answer, args.batch_size)
            counts.append(len(prompts))
            new.append(sum(p not in shown for p in prompts))
        print(f"| {name} | {statistics.mean(counts):.1f} | {counts} | {statistics.mean(new):.1f} | {seconds / args.calls:.1f} |")
    print(f"\nmachine after:  {machine()}")


if __name__ == "__main__":
    main()

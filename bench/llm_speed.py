"""Tokens per second of the embedded LLM (SmolLM2-135M-Instruct through llama.cpp), free text and
JSON under a schema, the two kinds of call a search makes.

    python bench/llm_speed.py [--repeats 3] [--max-tokens 200] [--smoke]

Each call goes through the project's own chat model (services/llm/embedded_llm.py): greedy,
repeat penalty 1.1, the same request every time; the rate is output tokens over the whole call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine
from langchain_core.messages import HumanMessage, SystemMessage

from neuron_search.services.llm.embedded_llm import _loaded, embedded_chat_model

MESSAGES = [
    SystemMessage("You are a helpful assistant."),
    HumanMessage("Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. Use many paragraphs."),
]
SCHEMA = {
    "type": "object",
    "properties": {"prompts": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 120}, "minItems": 8, "maxItems": 8}},
    "required": ["prompts"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="one short call of each kind")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.max_tokens = 1, 16
    model = embedded_chat_model(temperature=0.0, seed=0).model_copy(update={"max_tokens": args.max_tokens})
    started = time.perf_counter()
    _loaded(model.model_path)
    load = time.perf_counter() - started
    kinds = {"free text": model, "JSON (schema of 8 prompts)": model.model_copy(update={"response_format": {"type": "json_object", "schema": SCHEMA}})}
    print(f"machine: {machine()}; model loaded in {load:.2f} s\n")
    print("| call | tokens / s (median) | range | output tokens |")
    print("|---|---:|---|---:|")
    for name, chat in kinds.items():
        rates, tokens = [], 0
        for _ in range(args.repeats):
            started = time.perf_counter()
            answer = chat.invoke(MESSAGES)
            tokens = answer.usage_metadata["output_tokens"]
            rates.append(tokens / (time.perf_counter() - started))
        print(f"| {name} | {statistics.median(rates):.1f} | {min(rates):.1f}–{max(rates):.1f} | {tokens} |")


if __name__ == "__main__":
    main()

"""The original tool's loop, re-implemented faithfully but minimally, as the benchmarks' baseline.

The original was one script that looped: ask the LLM for ONE prompt (showing it the top and bottom
examples so far), compare that prompt with every stored prompt in a Python loop (the semantic
filter), and measure it alone with `run_with_cache`, which caches every activation of every layer.
Here it uses the same LLM, the same subject model (through the same TransformerBridge) and the same
embedder as this tool, so that only the loop differs. Two deliberate departures, both in its favour
or neutral: it measures the same built-in seed prompts first (counted in its budget), and it reduces
a prompt's per-token activations with the same rule as the tool (`max` by default; the original took
the `last` token), so that both search for the same number.

Not a benchmark itself: bench/measurement_throughput.py, bench/end_to_end.py and
bench/search_quality.py import it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


from filter_scaling import original_filter  # noqa: E402
from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402
from original_prompt_parsing import parse_prompts  # noqa: E402

from neuron_search.services.search.seeds import BUILTIN_SEEDS  # noqa: E402

ORIGINAL_SYSTEM = """\
You help an interpretability researcher find text that makes one neuron of a language model \
fire as strongly as possible. You see which prompts made the neuron fire most and least. \
Answer with one new prompt only: no quotes, no explanation."""

ORIGINAL_REQUEST = """\
Neuron {neuron} in layer {layer}.
Prompts that made it fire MOST (activation | prompt):
{top}

Prompts that made it fire LEAST:
{bottom}

Write ONE new prompt likely to make it fire even more than the best ones above."""


def original_measure(subject, prompt: str, layer: int, neuron: int, position: str = "max") -> float:
    """One prompt through `run_with_cache` with no names filter and no stop_at_layer: every
    activation of every layer is computed and cached, then one neuron is read."""
    _, cache = subject.bridge.run_with_cache(prompt)
    values = cache[f"blocks.{layer}.mlp.hook_post"][0, :, neuron]
    if subject.tokenizer.bos_token_id is not None and len(values) > 1:
        values = values[1:]  # the BOS token run_with_cache prepends
    return float(values.max() if position == "max" else values[-1])


def _table(records: list[tuple[float, str]]) -> str:
    return "\n".join(f"{a:.3f} | {p}" for a, p in records) or "(none yet)"


@dataclass
class OriginalLoop:
    """The loop's state; `run` may be called several times to continue it (benchmarks interleave it)."""

    subject: object
    chat_model: object
    embed: Callable[[list[str]], np.ndarray]
    layer: int
    neuron: int
    threshold: float = 0.5
    filter_buckets: frozenset[str] = frozenset({"mid"})
    top_k: int = 10
    position: str = "max"
    seed: int = 0
    prompts: list[str] = field(default_factory=list)
    activations: list[float] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    llm_calls: int = 0
    rejected: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (measured, best) after each measurement

    @property
    def measured(self) -> int:
        return len(self.prompts)

    @property
    def best(self) -> tuple[str, float] | None:
        if not self.activations:
            return None
        i = int(np.argmax(self.activations))
        return self.prompts[i], self.activations[i]

    def _store(self, prompt: str, embedding: np.ndarray) -> None:
        activation = original_measure(self.subject, prompt, self.layer, self.neuron, self.position)
        self.prompts.append(prompt)
        self.activations.append(activation)
        row = embedding[None, :]
        self.embeddings = row if self.embeddings is None else np.vstack([self.embeddings, row])
        self.curve.append((self.measured, max(self.activations)))

    def measure_seeds(self, seeds=BUILTIN_SEEDS) -> None:
        for prompt in seeds:
            self._store(prompt, self.embed([prompt])[0])

    def step(self) -> None:
        """One LLM call for one prompt; filter it against every stored prompt; measure it if it passes."""
        order = np.argsort(self.activations)
        top = [(self.activations[i], self.prompts[i]) for i in order[::-1][: self.top_k]]
        bottom = [(self.activations[i], self.prompts[i]) for i in order[: self.top_k]]
        messages = [
            SystemMessage(ORIGINAL_SYSTEM),
            HumanMessage(ORIGINAL_REQUEST.format(neuron=self.neuron, layer=self.layer, top=_table(top), bottom=_table(bottom))),
        ]
        self.llm_calls += 1
        answer = self.chat_model.invoke(messages, seed=self.seed + self.llm_calls).content
        found = parse_prompts(answer if isinstance(answer, str) else str(answer), limit=1)
        if not found:
            self.rejected += 1
            return
        prompt = found[0]
        embedding = self.embed([prompt])[0]
        status = original_filter(
            [prompt], embedding[None, :], self.prompts, self.embeddings, np.asarray(self.activations),
            self.threshold, self.filter_buckets, 15.0, 85.0,
        )[0]
        if status != "accepted":
            self.rejected += 1
            return
        self._store(prompt, embedding)

    def run(self, max_prompts: int | None = None, max_llm_calls: int | None = None, seconds: float | None = None) -> None:
        """Loop until any given limit is reached (measured prompts, LLM calls, or wall seconds from now)."""
        deadline = time.perf_counter() + seconds if seconds else None
        while True:
            if max_prompts is not None and self.measured >= max_prompts:
                return
            if max_llm_calls is not None and self.llm_calls >= max_llm_calls:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            self.step()

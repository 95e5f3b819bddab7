"""Shared test helpers: a scripted proposer, and the settings and run context of a search on the tiny GPT-2."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from neuron_search.api import NeuronSearch
from neuron_search.context import SearchContext
from neuron_search.services.llm.proposer import register_chat_model

WORDS = "alpha beta gamma delta river stone cloud seven ninety copper violet engine ledger orbit".split()


def fresh_answers(count: int, per_answer: int = 4) -> list[str]:
    """LLM answers whose prompts are all different from each other."""
    combos = itertools.permutations(WORDS, 4)
    return ["\n".join(" ".join(next(combos)) + f" {i}-{j}" for j in range(per_answer)) for i in range(count)]


def scripted(answers: list[str]) -> str:
    """Register a chat model that answers with `answers` in turn (cycling); returns its llm spec."""
    return register_chat_model(FakeListChatModel(responses=answers))


def tiny_settings(model_dir: Path | str, **overrides: Any) -> dict[str, Any]:
    """The settings every test search on the tiny GPT-2 starts from: its neuron 3 of layer 1, on the
    CPU; `overrides` add to them or replace them (a test's own llm, strategy, budget, results_dir)."""
    return {"model": str(model_dir), "layer": 1, "neuron": 3, "device": "cpu", **overrides}


def tiny_gradient_search(model_dir: Path | str, results_dir: Path | str, run_id: str) -> NeuronSearch:
    """A small gradient search on the tiny GPT-2 from three shipped-looking seeds, no corpus, no LLM call:
    what the evidence tests search before reading a run's evidence."""
    return NeuronSearch(**tiny_settings(
        model_dir, llm=scripted(["never asked"]), strategy="gradient", builtin_seeds=False,
        seed_prompts=("The quick brown fox.", "1, 2, 4, 8, 16", "What is the capital?"), seed_corpus=False,
        population=4, children=4, lead_children=4, results_dir=str(results_dir), run_id=run_id,
    ))  # fmt: skip


def tiny_context(model_dir: Path, results_dir: Path, llm: str, **overrides) -> SearchContext:
    settings = tiny_settings(
        model_dir, llm=llm, strategy="llm", batch_size=4, iterations=5, results_dir=str(results_dir), run_id="test-run"
    )
    settings.update(overrides)
    return SearchContext(**settings)

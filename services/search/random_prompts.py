"""Random fallback prompts: text that owes nothing to the LLM, to shake a stalled search loose.

Three strategies share each batch: strings of the subject model's own tokens, jumbles of
common words, numbers and symbols, and mutations of the best prompts found so far.
Mutations alone also top up LLM batches that come back short (nodes/generate.py).

Tokens are drawn from the vocabulary they are given: the subject model's text-only one
(`SubjectModel.vocabulary_for`) reads "" for a control or added token (`<bos>`, `<unusedN>`,
`<start_of_image>`, `[multimodal]`), which is never drawn; a token whose text looks like a control
token's name (`<|endoftext|>`, `<pad>`, `[CLS]`) is skipped too, unless the vocabulary allows added
tokens (`allows_added_tokens`, --allow-added-tokens).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence

COMMON_WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or",
    "had", "by", "not", "word", "but", "what", "some", "we", "can", "out", "other", "were",
    "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which",
    "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write",
    "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two",
    "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no",
    "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may",
    "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get",
    "place", "made", "live", "where", "after", "back", "little", "only", "round", "man",
    "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very",
    "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line",
    "before", "turn", "cause", "same", "mean", "old", "move", "right", "boy", "girl",
    "city", "tree", "house", "money", "red", "blue", "green", "night", "music", "king",
    "data", "code", "love", "war",
)  # fmt: skip

SYMBOLS: tuple[str, ...] = (
    "!", "?", ".", ",", ";", ":", "...", "-", "--", "—", "(", ")", "[", "]", "{", "}", "<",
    ">", "=", "==", "+", "*", "/", "\\", "|", "&", "%", "$", "#", "@", "^", "~", "_", "'",
    '"', "->", "=>", "::", "//", "/*", "*/", "<br>", "©", "€", "£", "°", "§", "•", "→", "π",
    "≈", "≠", "∑", "✓", "♥", "😀",
)  # fmt: skip

# Decoded special tokens ("<|endoftext|>", "<pad>", "[CLS]") are markup, not text to measure.
_SPECIAL_TOKEN = re.compile(r"^\s*(?:<\|[^|]*\|>|</?[A-Za-z_][\w.:-]*>|\[[A-Z_]+\])\s*$")
_TOKEN_TRIES = 8  # draws per slot before a prompt settles for fewer vocabulary tokens
_MUTATION_TRIES = 6  # mutations tried before accepting one that equals a top prompt


def random_prompts(
    rng: random.Random, n: int, vocabulary: Sequence[str], top_prompts: Sequence[str]
) -> list[str]:
    """Exactly `n` non-empty prompts; the same `rng` state gives the same prompts.

    `vocabulary` may be a lazy sequence of a huge tokenizer, so it is only ever indexed; a token
    that reads "" is never drawn (see the module docstring).
    """
    if n <= 0:
        return []
    tops = _usable(top_prompts)
    strategies: list[Callable[[], str]] = []
    if len(vocabulary) > 0:
        strategies.append(lambda: _token_string(rng, vocabulary))
    strategies.append(lambda: _word_mix(rng))
    if tops:
        strategies.append(lambda: _mutation(rng, vocabulary, tops))
    counts = [n // len(strategies)] * len(strategies)
    # The remainder goes to random strategies so small batches do not always favour the first.
    for index in rng.sample(range(len(strategies)), n % len(strategies)):
        counts[index] += 1
    prompts: list[str] = []
    for strategy, count in zip(strategies, counts):
        for _ in range(count):
            prompt = strategy().strip()
            prompts.append(prompt or _word_mix(rng))
    rng.shuffle(prompts)
    return prompts


def mutations(rng: random.Random, n: int, vocabulary: Sequence[str], top_prompts: Sequence[str]) -> list[str]:
    """`n` small edits (swap, delete, duplicate, splice, replace a word) of the top prompts; [] without any."""
    tops = _usable(top_prompts)
    if not tops:
        return []
    return [_mutation(rng, vocabulary, tops).strip() or rng.choice(tops).strip() for _ in range(max(n, 0))]


def _usable(prompts: Sequence[str]) -> list[str]:
    """The prompts that can be mutated: text with something in it."""
    return [p for p in prompts if isinstance(p, str) and p.strip()]


def _token_string(rng: random.Random, vocabulary: Sequence[str]) -> str:
    """3-12 random tokens of the subject model joined as they come (they carry their spaces)."""
    tokens: list[str] = []
    for _ in range(rng.randint(3, 12)):
        for _ in range(_TOKEN_TRIES):
            token = _draw_token(rng, vocabulary)
            if token is not None:
                tokens.append(token)
                break
    return "".join(tokens)


def _draw_token(rng: random.Random, vocabulary: Sequence[str]) -> str | None:
    token = vocabulary[rng.randrange(len(vocabulary))]
    # Lone pieces of multi-byte characters decode to U+FFFD; they would re-encode differently.
    if not isinstance(token, str) or not token or "\ufffd" in token or "\x00" in token:
        return None
    # Markup-like names are skipped unless the vocabulary allows the added tokens that have them.
    if not getattr(vocabulary, "allows_added_tokens", False) and _SPECIAL_TOKEN.match(token):
        return None
    # Byte tokens of control characters (bell, escape, ...) garble terminals, tables and CSV files.
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in token):
        return None
    return token


def _word_mix(rng: random.Random) -> str:
    """4-14 common words, numbers and symbols joined by spaces."""
    items: list[str] = []
    for _ in range(rng.randint(4, 14)):
        roll = rng.random()
        if roll < 0.55:
            items.append(rng.choice(COMMON_WORDS))
        elif roll < 0.8:
            items.append(_number(rng))
        else:
            items.append(rng.choice(SYMBOLS))
    return " ".join(items)


def _number(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        return str(rng.randint(0, 100))
    if kind == 1:
        return str(rng.randint(100, 10**7))
    if kind == 2:
        return f"{rng.uniform(0, 1000):.{rng.randint(1, 4)}f}"
    if kind == 3:
        return str(rng.randint(1500, 2035))  # a year
    if kind == 4:
        return _sequence(rng)
    if kind == 5:
        return f"{rng.randint(1000, 10**9):,}"
    if kind == 6:
        return f"{rng.randint(1, 99)}%"
    if kind == 7:
        return f"${rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"
    if kind == 8:
        return f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
    return str(-rng.randint(1, 1000))


def _sequence(rng: random.Random) -> str:
    """A comma list such as "2, 4, 8, 16" (geometric, arithmetic or random)."""
    length = rng.randint(3, 7)
    start = rng.randint(0, 20)
    style = rng.randrange(3)
    if style == 0:
        ratio = rng.randint(2, 5)
        values = [max(start, 1) * ratio**i for i in range(length)]
    elif style == 1:
        step = rng.randint(1, 25)
        values = [start + step * i for i in range(length)]
    else:
        values = [rng.randint(0, 999) for _ in range(length)]
    return ", ".join(str(v) for v in values)


# --- Mutations of the best prompts --------------------------------------------------------
# A prompt is kept as its words and the whitespace between them, so that mutating a code
# prompt keeps its newlines and indentation.


def _split(prompt: str) -> tuple[list[str], list[str]]:
    stripped = prompt.strip()
    return stripped.split(), re.findall(r"\s+", stripped)


def _join(words: list[str], gaps: list[str]) -> str:
    parts: list[str] = []
    for index, word in enumerate(words):
        if index:
            parts.append(gaps[index - 1] if index - 1 < len(gaps) else " ")
        parts.append(word)
    return "".join(parts)


def _mutation(rng: random.Random, vocabulary: Sequence[str], tops: list[str]) -> str:
    originals = set(p.strip() for p in tops)
    mutated = ""
    for _ in range(_MUTATION_TRIES):
        mutated = _mutate_once(rng, vocabulary, tops)
        # One or two more edits now and then, so that mutations wander further than one step.
        for _ in range(rng.choice((0, 0, 1, 2))):
            mutated = _mutate_once(rng, vocabulary, [mutated])
        if mutated.strip() and mutated.strip() not in originals:
            break
    return mutated


def _mutate_once(rng: random.Random, vocabulary: Sequence[str], tops: list[str]) -> str:
    words, gaps = _split(rng.choice(tops))
    operation = rng.choice(("swap", "delete", "duplicate", "splice", "replace"))
    if operation == "swap" and len(words) >= 2:
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    elif operation == "delete" and len(words) >= 2:
        i = rng.randrange(len(words))
        del words[i]
        del gaps[max(i - 1, 0) : max(i, 1)]
    elif operation == "duplicate":
        i = rng.randrange(len(words))
        words.insert(i, words[i])
        gaps.insert(i, " ")
    elif operation == "splice":
        other_words, other_gaps = _split(rng.choice(tops))
        cut = rng.randint(1, len(words))
        other_cut = rng.randint(0, len(other_words) - 1)
        words = words[:cut] + other_words[other_cut:]
        gaps = gaps[: cut - 1] + [" "] + other_gaps[other_cut:]
    else:  # replace, and the fallback when a prompt is too short for the chosen edit
        i = rng.randrange(len(words))
        words[i] = _replacement_word(rng, vocabulary)
    return _join(words, gaps)


def _replacement_word(rng: random.Random, vocabulary: Sequence[str]) -> str:
    if len(vocabulary) > 0:
        for _ in range(_TOKEN_TRIES):
            token = _draw_token(rng, vocabulary)
            if token is not None and token.strip():
                return token.strip()
    return rng.choice(COMMON_WORDS)

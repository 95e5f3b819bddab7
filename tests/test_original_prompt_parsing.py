"""The line-by-line parser the search used before it asked for JSON (bench/original_prompt_parsing.py,
kept for the benchmarks that measured it): every shape of LLM answer yields exactly the prompts it
holds. The search's own parser is tested in tests/test_prompt_parsing.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


from original_prompt_parsing import MAX_PROMPT_CHARS, REFUSAL_MARKERS, parse_prompts  # noqa: E402

CASES = {
    "plain lines": ("alpha beta\ngamma delta\n", ["alpha beta", "gamma delta"]),
    "numbered with preamble and trailing explanation": (
        "Here are 8 prompts:\n\n1. The cat sat on the mat\n2) 3.14159 2.71828\n(3) def f(x):\n"
        "#4: SELECT * FROM users;\n[5] Lorem ipsum\n\n"
        "These prompts target numbers and code, which seem to make the neuron fire.",
        ["The cat sat on the mat", "3.14159 2.71828", "def f(x):", "SELECT * FROM users;",
         "Lorem ipsum"],
    ),
    "bullets": ("- one\n* two\n• three\n+ four\n> five", ["one", "two", "three", "four", "five"]),
    "straight quotes": ('"double"\n\'single\'', ["double", "single"]),
    "curly quotes": ("“curly double”\n‘curly single’\n«guillemets»", [
        "curly double", "curly single", "guillemets"]),
    "apostrophe inside single quotes": ("'It's raining'", ["It's raining"]),
    "inner quotes are kept": ('"Hello," she said, "goodbye"', ['"Hello," she said, "goodbye"']),
    "quoted with explanation": (
        '1. "The cat sat" - animal words\n2. "1, 2, 4, 8" (powers of two)',
        ["The cat sat", "1, 2, 4, 8"],
    ),
    "quoted json-ish lines with commas": ('"a b",\n"c d",', ["a b", "c d"]),
    "numbering then quotes and bullets": ('1. - "x y"\n2. * \'z\'', ["x y", "z"]),
    "code fence keeps only its content": (
        "Sure! Here you go:\n```\nfirst prompt\nsecond prompt\n```\nGood luck!",
        ["first prompt", "second prompt"],
    ),
    "unterminated fence": ("```text\nonly\nthese", ["only", "these"]),
    "fence keeps code lines ending with colon and comments": (
        "```python\n# a comment\nfor x in y:\n```",
        ["# a comment", "for x in y:"],
    ),
    "inline code": ("`print(1)`\n```echo hi```", ["print(1)", "echo hi"]),
    "markdown bold and headers": (
        "## Numbers\n**1.** 2, 4, 8\n**Prompt 2:** The king\n1. **bold prompt**\n"
        "### Code:\n**Explanation:** these aim at digits",
        ["2, 4, 8", "The king", "bold prompt"],
    ),
    "prompt labels": ("Prompt 1: alpha\nPrompt: beta\nPrompt - gamma", ["alpha", "beta", "gamma"]),
    "horizontal rules": ("---\nfoo\n***\nbar\n___", ["foo", "bar"]),
    "preambles and closing remarks": (
        "Sure!\nCertainly.\nHere is a new batch of prompts.\nalpha\nbeta\n"
        "Note: I varied the numbers.\nI hope this helps!\nLet me know if you want more.",
        ["alpha", "beta"],
    ),
    "sentences that look like chatter survive": (
        "Here is the news.\nI can't believe it's not butter.\nI'm sorry for your loss.\n"
        "This example shows a loop.\nSure enough, it rained.",
        ["Here is the news.", "I can't believe it's not butter.", "I'm sorry for your loss.",
         "This example shows a loop.", "Sure enough, it rained."],
    ),
    "code ending with a colon survives": ("def foo():\nx[0]:", ["def foo():", "x[0]:"]),
    "one-line numbered list": ("1. foo 2. bar 3. baz qux", ["foo", "bar", "baz qux"]),
    "decimals are not numbering": ("3.14 2.71\n1. 2. 3.", ["3.14 2.71", "2. 3."]),
    "empty list items": ("-\n3.\n•\n4. real", ["real"]),
    "windows line endings": ("a\r\nb\r\nc\r\n", ["a", "b", "c"]),
    "old mac line endings and separators": ("a\rb\u2028c", ["a", "b", "c"]),
    "control characters": ("\x00\x07abc\nd\x1b[0me\x7f", ["abc", "d[0me"]),
    "bom zero width and replacement characters": ("\ufeffal\u200bpha\ufffd", ["alpha"]),
    "tabs inside a prompt are kept": ("\tif x:\treturn 1\t", ["if x:\treturn 1"]),
    "duplicates keep the first": ("same\n" * 10 + "other\nsame", ["same", "other"]),
    "duplicates after cleaning": ('1. x\n- x\n"x"', ["x"]),
    "empty": ("", []),
    "whitespace only": ("  \n\n\t \r\n", []),
    "only chatter": ("Sure! Here are some prompts:", []),
    "refusal": ("I'm sorry, but I can't help with that.", []),
    "refusal with curly apostrophes": ("I’m sorry, but I can’t comply with this request.", []),
    "as an ai refusal with explanation": (
        "As an AI language model, I cannot do this.\nIt would not be appropriate.", []),
    "refusal then a list keeps the list": (
        "I'm sorry, but I can't write those. Here are safer ones:\n1. foo\n2. bar",
        ["foo", "bar"],
    ),
    "refusal line after prompts is dropped": (
        "alpha\nbeta\nI cannot generate more than two.", ["alpha", "beta"]),
    "json list": ('["x", "y", "x"]', ["x", "y"]),
    "json object in a json fence": (
        'Here are the prompts:\n```json\n{"prompts": ["a b", "c d"]}\n```\nHope this helps!',
        ["a b", "c d"],
    ),
    "json fence with unknown chatter around": (
        '```json\n{"prompts": ["a", "b"]}\n```\nGood luck with the search!', ["a", "b"]),
    "json list after a colon": ('Here are the prompts: ["q", "r"]', ["q", "r"]),
    "json list after a preamble line": ('Sure!\n["q", "r"]\nThese prompts target digits.',
                                        ["q", "r"]),
    "json list of objects": (
        '{"prompts": [{"prompt": "p1", "reason": "r"}, {"text": "p2"}, {"why": "p3"}]}',
        ["p1", "p2", "p3"],
    ),
    "json nested container": ('{"result": {"candidates": ["n1", "n2"]}}', ["n1", "n2"]),
    "json with trailing commas": ('[\n  "a",\n  "b",\n]', ["a", "b"]),
    "json single string": ('"just one"', ["just one"]),
    "json escapes are cleaned": ('["bad\\u0000esc", "  ", ""]', ["badesc"]),
    "json multi-line string stays one prompt": ('["def f():\\n    return 1"]',
                                                ["def f():\n    return 1"]),
    "json-shaped prompt is a prompt": (
        '{"name": "Alice", "age": 30, "tags": ["admin", "user"]}',
        ['{"name": "Alice", "age": 30, "tags": ["admin", "user"]}'],
    ),
    "json inside plain lines is a prompt": (
        'Alpha\n{"name": "Alice", "tags": ["a", "b"]}\nBeta',
        ["Alpha", '{"name": "Alice", "tags": ["a", "b"]}', "Beta"],
    ),
    "json numbers are not prompts": ("[1, 2, 3]", ["[1, 2, 3]"]),
    "bracketed text that is not json": ("[1] foo", ["foo"]),
}  # fmt: skip


@pytest.mark.parametrize(("answer", "expected"), list(CASES.values()), ids=list(CASES))
def test_parse_prompts(answer: str, expected: list[str]) -> None:
    assert parse_prompts(answer, limit=50) == expected


def test_limit_cuts_a_long_answer() -> None:
    answer = "\n".join(f"{i}. prompt number {i}" for i in range(1, 1001))
    assert parse_prompts(answer, limit=8) == [f"prompt number {i}" for i in range(1, 9)]


def test_limit_counts_distinct_prompts() -> None:
    assert parse_prompts("a\na\nb\nc", limit=2) == ["a", "b"]


@pytest.mark.parametrize("limit", [0, -3])
def test_no_room_means_no_prompts(limit: int) -> None:
    assert parse_prompts("a\nb", limit=limit) == []


def test_json_list_obeys_limit() -> None:
    assert parse_prompts(json.dumps([f"p{i}" for i in range(100)]), limit=3) == ["p0", "p1", "p2"]


def test_one_huge_line_is_kept_but_cut() -> None:
    huge = "word " * 5000
    [prompt] = parse_prompts(huge, limit=8)
    assert len(prompt) <= MAX_PROMPT_CHARS == 2000
    assert prompt == huge[:2000].strip()


def test_huge_json_string_is_cut() -> None:
    [prompt] = parse_prompts(json.dumps(["x" * 10_000]), limit=8)
    assert prompt == "x" * 2000


@pytest.mark.parametrize("answer", [None, b"\xff\xfeabc", 42])
def test_non_text_input_does_not_raise(answer) -> None:
    assert parse_prompts(answer, limit=8) in ([], ["abc"], ["42"])


@pytest.mark.parametrize(
    "answer",
    [
        "\x00" * 100,
        "```",
        "``````",
        "[",
        "{",
        '{"prompts": ',
        "**",
        "****",
        '"',
        "1.",
        "- ",
        "\ud800\udfff",
        "".join(chr(i) for i in range(0, 0x3000, 7)),
        "[" * 10_000 + "]" * 10_000,
        '{"a":' * 3000 + "1" + "}" * 3000,
        "\n".join(["```"] * 101),
    ],
)
def test_garbage_never_raises(answer: str) -> None:
    prompts = parse_prompts(answer, limit=8)
    assert isinstance(prompts, list)
    assert all(isinstance(p, str) and p and p == p.strip() for p in prompts)
    assert len(prompts) <= 8


def test_every_prompt_is_clean() -> None:
    answer = "1. \x00a\x01\n2.  b \n- \x7f\n\"\"\n''\n  \n"
    assert parse_prompts(answer, limit=8) == ["a", "b"]


def test_refusal_markers_are_lowercase_phrases() -> None:
    assert REFUSAL_MARKERS and all(m == m.lower().strip() for m in REFUSAL_MARKERS)

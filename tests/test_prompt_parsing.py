"""parse_prompts, the search's parser: the JSON list the schema asks for, else one prompt a line.

(The line-by-line heuristics the search used before it asked for JSON are tested in
tests/test_original_prompt_parsing.py.)"""

from __future__ import annotations

import json

import pytest

from neuron_search.services.llm.prompt_parsing import MAX_PROMPT_CHARS, REFUSAL_MARKERS, normalize_text, parse_prompts
from neuron_search.services.llm.proposer import REQUEST_TEMPLATE, SYSTEM_PROMPT, prompts_schema

CASES = {
    # JSON, as the schema asks: {"prompts": [...]}.
    "json object": ('{"prompts": ["a b", "c d"]}', ["a b", "c d"]),
    "json object with a raw newline in a string": ('{"prompts": ["def f():\n    return 1", "x"]}',
                                                   ["def f():\n    return 1", "x"]),
    "json list": ('["x", "y", "x"]', ["x", "y"]),
    "json in a fence with chatter around": (
        'Here are the prompts:\n```json\n{"prompts": ["a", "b"]}\n```\nHope this helps!', ["a", "b"]),
    "json items that are not strings are left out": ('{"prompts": ["a", 3, null, {"p": "q"}, ""]}', ["a"]),
    "json escapes are cleaned": ('{"prompts": ["bad\\u0000esc", "  "]}', ["badesc"]),
    "json without a prompts list is read as lines": ('{"name": "Alice"}\nBeta', ['{"name": "Alice"}', "Beta"]),
    "broken json is read as lines": ('{"prompts": ["one", "two"', ['{"prompts": ["one", "two"']),
    # Otherwise one prompt a line.
    "plain lines": ("alpha beta\n\ngamma delta\n", ["alpha beta", "gamma delta"]),
    "list markers": ("1. one\n2) two\n- three\n* four\n• five", ["one", "two", "three", "four", "five"]),
    "not list markers": ("-1 degrees\n*args\n3.14 pi", ["-1 degrees", "*args", "3.14 pi"]),
    "bold": ("1. **bold prompt**\n**another**", ["bold prompt", "another"]),
    "an introducing line": ("Here are the texts:\n- a cat\n- a dog", ["a cat", "a dog"]),
    "only the fence counts": (
        "Sure! Here are some prompts:\n```\n1. first\nsecond:\n```\nThese should fire.", ["first", "second:"]),
    "refusal": ("I'm sorry, but I can't help with that request. As an AI, I must decline.", []),
    "refusal with curly apostrophes": ("I’m sorry, but I can’t.\nalpha", ["alpha"]),
    "windows line endings": ("a\r\nb\r\nc\r\n", ["a", "b", "c"]),
    "control characters": ("\x00\x07abc\nd\x1b[0me\x7f", ["abc", "d[0me"]),
    "duplicates keep the first": ("same\n" * 10 + "other\nsame", ["same", "other"]),
    "empty": ("", []),
    "whitespace only": ("  \n\n\t \r\n", []),
}  # fmt: skip


@pytest.mark.parametrize(("answer", "expected"), list(CASES.values()), ids=list(CASES))
def test_parse_prompts(answer: str, expected: list[str]) -> None:
    assert parse_prompts(answer, limit=50) == expected


def test_limit_cuts_a_long_answer() -> None:
    lines = "\n".join(f"{i}. prompt number {i}" for i in range(1, 1001))
    assert parse_prompts(lines, limit=8) == [f"prompt number {i}" for i in range(1, 9)]
    assert parse_prompts(json.dumps({"prompts": [f"p{i}" for i in range(100)]}), limit=3) == ["p0", "p1", "p2"]


@pytest.mark.parametrize("limit", [0, -3])
def test_no_room_means_no_prompts(limit: int) -> None:
    assert parse_prompts("a\nb", limit=limit) == []


def test_a_huge_prompt_is_kept_but_cut() -> None:
    assert parse_prompts(json.dumps({"prompts": ["x" * 10_000]}), limit=8) == ["x" * MAX_PROMPT_CHARS]
    [prompt] = parse_prompts("word " * 5000, limit=8)
    assert prompt == ("word " * 5000)[:MAX_PROMPT_CHARS].strip()


@pytest.mark.parametrize("answer", [None, b"\xff\xfeabc", 42])
def test_non_text_input_does_not_raise(answer) -> None:
    assert parse_prompts(answer, limit=8) in ([], ["abc"], ["42"])


@pytest.mark.parametrize(
    "answer",
    ["\x00" * 100, "```", "[", "{", '{"prompts": ', "**", "- ", "1.", "\ud800\udfff", "[" * 10_000 + "]" * 10_000,
     '{"a":' * 3000 + "1" + "}" * 3000, "".join(chr(i) for i in range(0, 0x3000, 7))],
)  # fmt: skip
def test_garbage_never_raises(answer: str) -> None:
    prompts = parse_prompts(answer, limit=8)
    assert all(isinstance(p, str) and p and p == p.strip() for p in prompts) and len(prompts) <= 8


def test_normalize_text_leaves_only_text() -> None:
    assert normalize_text("a\r\nb\u2028c\x00\ufeff\u200bd") == "a\nb\ncd"


def test_refusal_markers_are_lowercase_phrases() -> None:
    assert REFUSAL_MARKERS and all(m == m.lower().strip() for m in REFUSAL_MARKERS)


def test_the_request_asks_for_what_the_schema_enforces() -> None:
    """The words and the grammar agree: JSON {"prompts": [...]}, exactly the batch, never lines."""
    assert list(prompts_schema(8, 240)["properties"]) == ["prompts"]
    request = REQUEST_TEMPLATE.format(neuron=1, layer=2, model="m", hint="", hypothesis="", top="", bottom="", rejected="", n=8)
    for text in (SYSTEM_PROMPT, request):
        assert '{"prompts": [' in text and "JSON only" in text and "per line" not in text.lower()
    assert "exactly 8 prompts" in request


def test_the_embedded_proposer_answers_json_of_exactly_the_batch():
    # A real call: llama.cpp turns the schema into a grammar, so even the 135M model writes the batch.
    from langchain_core.messages import HumanMessage

    from neuron_search.services.llm.proposer import Proposer

    answer = Proposer("embedded", 0.7).propose([HumanMessage("Write 3 short prompts about rivers.")], seed=0, schema=prompts_schema(3, 40))
    value = json.loads(answer, strict=False)  # the grammar lets a raw newline into a string
    assert len(value["prompts"]) == 3 and all(1 <= len(p) <= 40 for p in value["prompts"])
    assert len(parse_prompts(answer, 3)) == 3

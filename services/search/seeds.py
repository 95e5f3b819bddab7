"""The built-in seed prompts: a deliberately varied start, measured before the LLM is asked."""

from __future__ import annotations

from pathlib import Path

from neuron_search.services.errors import UserError

BUILTIN_SEEDS: tuple[str, ...] = (
    # numbers and sequences
    "1, 2, 4, 8, 16, 32, 64, 128",
    "The population grew from 1,250,000 in 1990 to 3,400,000 in 2020.",
    "3.14159 2.71828 1.41421 1.61803",
    "Call 555-0199 before 10:30 on 12/05/2024.",
    # code
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "for (int i = 0; i < len; i++) { sum += a[i]; }",
    '{"name": "Alice", "age": 30, "tags": ["admin", "user"]}',
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    # prose
    "The old lighthouse keeper watched the storm roll in over the grey sea.",
    "She signed the contract, closed the folder, and finally allowed herself to smile.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The committee will reconvene next Tuesday to vote on the revised budget.",
    # questions and dialogue
    "What is the capital of Australia?",
    "Why do cats purr when they are happy?",
    '"Are you coming tonight?" he asked. "Only if you bring the snacks," she replied.',
    # other languages
    "Le chat dort sur le canapé depuis ce matin.",
    "Der Zug nach Berlin hat zwanzig Minuten Verspätung.",
    "El niño comió tres manzanas y dos naranjas.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    # punctuation, symbols and markup
    "!!! ??? ... --- *** ### $$$",
    "<div class=\"header\"><a href=\"/home\">Home</a></div>",
    "# Introduction\n\n- item one\n- item two",
    "@user thanks for the follow!! #blessed :) <3",
    # lists, names, dates
    "apples, oranges, bananas, grapes, cherries",
    "Monday, Tuesday, Wednesday, Thursday, Friday",
    "George Washington, John Adams, Thomas Jefferson",
    "On 4 July 1776 the Declaration of Independence was adopted.",
)


def read_seed_file(path: str) -> tuple[str, ...]:
    """Seed prompts from a UTF-8 text file, one per line; blank lines are skipped."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"The seed prompts file {path} does not exist. Give --seed-prompts a text file with one prompt per line.")
    data = file.read_bytes()
    if b"\x00" in data:
        raise UserError(f"The seed prompts file {path} looks binary (it holds NUL bytes). Give --seed-prompts a UTF-8 text file with one prompt per line.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"The seed prompts file {path} is not UTF-8 text (byte {error.start} cannot be decoded). "
            "Save it as UTF-8 with one prompt per line."
        ) from None
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        raise UserError(f"The seed prompts file {path} holds no prompts. Put one prompt per line in it.")
    return prompts

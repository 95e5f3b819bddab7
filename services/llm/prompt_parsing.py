"""Read an LLM's answer as a list of prompts: the JSON the request asks for, else one per line.

The proposer and the generation scorer ask for `{"prompts": [...]}` (proposer.prompts_schema), and
the embedded LLM (llama.cpp's grammar) and Ollama (`format`) enforce it while sampling, so their
answers parse as JSON. Any other chat model (`custom:` specs) only reads the request text and may
answer with lines: then each line is a prompt, less blank lines, list markers ("1.", "-", "*",
"•") and **bold**; when the answer fences anything in ``` or ~~~, only the fenced lines count;
outside a fence, a line ending with ":" introduces the list and a refusal is no prompt. Nothing here
raises on what the LLM wrote: a bad answer yields fewer prompts. (The line-by-line heuristics this
replaced, for numbered, quoted and chatty answers, are bench/original_prompt_parsing.py.)
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_PROMPT_CHARS = 2000

# A line holding one of these (lowercase, straight apostrophes) is the LLM declining, not a prompt.
REFUSAL_MARKERS: tuple[str, ...] = (
    "i'm sorry, but", "i am sorry, but", "i apologize, but", "as an ai", "as a language model",
    "i can't help with", "i cannot help with", "i can't assist", "i cannot assist", "i must decline",
)  # fmt: skip

# Line breaks other than \n that would otherwise either glue lines together or split them.
_LINE_BREAKS = re.compile(r"\r\n|[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Control characters (keeping \t and \n), surrogates left by bad decoding, private-use
# glyphs, byte-order marks, zero-width spaces and the replacement character: none is text.
_NON_TEXT = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\ufeff\u200b\ufffd\ufffe\uffff]"
)
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_MARKER = re.compile(r"^(?:\d{1,3}[.)]|[-*•])\s+")  # a marker is followed by whitespace: not "-1", "*args"
_BOLD = re.compile(r"^\*\*(.+)\*\*$")


def parse_prompts(text: Any, limit: int) -> list[str]:
    """At most `limit` distinct, cleaned prompts from an LLM answer, in the answer's order."""
    if limit <= 0:
        return []
    text = normalize_text(_as_text(text))
    items = _json_prompts(text)
    prompts: list[str] = []
    for item in _line_prompts(text) if items is None else items:
        # JSON escapes can smuggle control characters back in.
        prompt = normalize_text(item).strip()[:MAX_PROMPT_CHARS].strip()
        if prompt and prompt not in prompts:
            prompts.append(prompt)
            if len(prompts) == limit:
                break
    return prompts


def normalize_text(text: str) -> str:
    """The text with line breaks made plain and what is not text (see _NON_TEXT) removed."""
    return _NON_TEXT.sub("", _LINE_BREAKS.sub("\n", text))


def _as_text(text: Any) -> str:
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    return text if isinstance(text, str) else str(text)


def _json_prompts(text: str) -> list[str] | None:
    """The strings of the answer's {"prompts": [...]} (or of a bare JSON list): the whole text, or
    its outermost {...} or [...] when the LLM wrapped it in chatter or a code fence; None when the
    answer holds no such JSON."""
    stripped = text.strip()
    candidates = [stripped]
    for open_char, close_char in ("{}", "[]"):
        start, end = stripped.find(open_char), stripped.rfind(close_char)
        if 0 <= start < end:
            candidates.append(stripped[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate, strict=False)  # a grammar lets a raw newline into a string
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            value = value.get("prompts")
        if isinstance(value, list):
            return [item for item in value if isinstance(item, str)]
    return None


def _line_prompts(text: str) -> list[str]:
    """One prompt a line, less what the module's docstring lists."""
    lines = text.split("\n")
    fenced = any(_FENCE.match(line) for line in lines)
    prompts = []
    for line in _inside_fences(lines) if fenced else lines:
        item = _MARKER.sub("", line.strip(), count=1).strip()
        bold = _BOLD.match(item)
        item = bold.group(1).strip() if bold else item
        # Outside a fence, "Here are the prompts:" introduces the list and a refusal is no prompt.
        if item and (fenced or not (item.endswith(":") or _is_refusal(item))):
            prompts.append(item)
    return prompts


def _inside_fences(lines: list[str]) -> list[str]:
    kept, inside = [], False
    for line in lines:
        if _FENCE.match(line):
            inside = not inside
        elif inside:
            kept.append(line)
    return kept


def _is_refusal(item: str) -> bool:
    plain = " ".join(item.replace("’", "'").split()).lower()
    return any(marker in plain for marker in REFUSAL_MARKERS)

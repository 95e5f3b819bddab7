"""The line-by-line parser of free-text LLM answers that the search used until it asked for JSON.

The proposer once asked for one prompt per line and nothing else, but answers came numbered,
bulleted, quoted, fenced, as JSON, wrapped in chat pleasantries, or as refusals; this turned
whatever came into a clean list of candidate prompts. The search now gets JSON through the LLM's
schema support (bench/RESULTS.md section 11 measured the same usable prompts either way) and reads
it with the small services/llm/prompt_parsing.py. This parser is kept, unchanged, for the
benchmarks that measured answers with it: bench/original_loop.py (the original tool's one prompt a
call) and the free-text row of bench/structured_output.py. Its tests are
tests/test_original_prompt_parsing.py.

Everything here must survive any input: a bad answer yields fewer prompts, never an exception.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_PROMPT_CHARS = 2000

# Phrases that mark an answer as a refusal rather than prompts (matched lowercase, with
# curly apostrophes made straight, anywhere in a line that is not a list item).
REFUSAL_MARKERS: tuple[str, ...] = (
    "i'm sorry, but",
    "i am sorry, but",
    "sorry, but i",
    "i apologize, but",
    "i apologise, but",
    "as an ai",
    "as a language model",
    "as a large language model",
    "i must decline",
    "i can't help with",
    "i cannot help with",
    "i can't assist",
    "i cannot assist",
    "i can't comply",
    "i cannot comply",
    "i can't fulfill",
    "i cannot fulfill",
    "i can't provide",
    "i cannot provide",
    "i can't create",
    "i cannot create",
    "i can't generate",
    "i cannot generate",
    "i can't do that",
    "i cannot do that",
    "i won't be able to",
    "i'm unable to help",
    "i am unable to help",
    "i'm unable to assist",
    "i am unable to assist",
    "i'm unable to provide",
    "i am unable to provide",
    "i'm not able to help",
    "i am not able to help",
    "i'm not able to provide",
    "i am not able to provide",
)

# Line breaks other than \n that would otherwise either glue lines together or split them.
_LINE_BREAKS = re.compile(r"\r\n|[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Control characters (keeping \t and \n), surrogates left by bad decoding, private-use
# glyphs, byte-order marks, zero-width spaces and the replacement character: none is text.
_NON_TEXT = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\ufeff\u200b\ufffd\ufffe\uffff]"
)

_FENCE = re.compile(r"^\s*(```|~~~)")
_NUMBERING = re.compile(r"^(?:\(\d{1,3}\)|\[\d{1,3}\]|#\d{1,3}[.:)]?|\d{1,3}[.):\]])\s+")
# Not bare "-1" or "*args": a bullet is a marker followed by whitespace.
_BULLET = re.compile(r"^[-*+•·‣▪◦–—>]\s+")
_LABEL = re.compile(r"^prompt\s*#?\s*\d{0,3}\s*(?:[:.)]|\s[-–—])\s+", re.IGNORECASE)
_BOLD = re.compile(r"^(\*\*|__)(.+?)\1(.*)$", re.DOTALL)
_HEADER = re.compile(r"^#{1,6}\s")
_RULE = re.compile(r"^(?:[-*_=]\s*){3,}$")
_JSON_SCAFFOLD = re.compile(r'^(?:[\[\]{}],?|"?[\w -]+"?\s*:\s*[\[{])$')
_NOTE_LABEL = re.compile(
    r"^(?:note|notes|explanation|rationale|reasoning|strategy|summary|why)\s*:", re.IGNORECASE
)
# A numbered list the LLM wrote on one line: "1. foo 2. bar 3. baz".
_INLINE_NUMBER = re.compile(r"(?:^|\s)(\d{1,2})([.)])\s+")

_INTERJECTION = (
    r"(?:sure|certainly|of course|okay|ok|absolutely|great|alright|all right|got it|"
    r"understood|no problem|gladly|happy to help)"
)
_BARE_INTERJECTION = re.compile(rf"^{_INTERJECTION}(?:\s+thing)?[\s!.,:;]*$", re.IGNORECASE)
_CLOSING_REMARK = re.compile(
    r"^(?:i hope (?:this|these|that)|hope (?:this|these|that)|let me know|feel free)\b",
    re.IGNORECASE,
)
# Openers that introduce the list; they only count together with a word about the list itself,
# so that a prompt like "Here is the news." survives.
_INTRO = re.compile(
    rf"^(?:{_INTERJECTION}\b|here(?:'s|\s+is|\s+are)\b|below\b|the following\b|"
    r"i(?:'ve|\s+have|'ll|\s+will|'m going to)\b|let me\b|let's\b)",
    re.IGNORECASE,
)
_INTRO_TOPIC = re.compile(
    r"\b(?:prompts?|snippets?|candidates?|variations?|suggestions?|examples?|ideas?|batch|"
    r"list|options?|directions?|more|ones|you go|they are|neuron|activat\w*)\b",
    re.IGNORECASE,
)
# Remarks about the prompts after the list: an opener plus a word only commentary uses.
_REMARK = re.compile(
    r"^(?:these|this|those|each|all|the above|the prompts|my|i|in these|based on|to maximize|"
    r"to target|they|note)\b",
    re.IGNORECASE,
)
_REMARK_TOPIC = re.compile(
    r"\b(?:prompts?|snippets?|candidates?|variations?|suggestions?|neurons?|activat\w*|"
    r"fires?|firing)\b",
    re.IGNORECASE,
)

_QUOTE_GROUPS = ('"“”„«»', "'‘’‚", "`")
_CONTAINER_KEYS = (
    "prompts", "candidates", "texts", "snippets", "items", "results", "outputs",
    "examples", "data", "answer", "response", "list",
)  # fmt: skip
_ITEM_KEYS = ("prompt", "text", "content", "value", "snippet", "candidate")


def parse_prompts(text: str, limit: int) -> list[str]:
    """At most `limit` distinct, cleaned prompts from an LLM answer, in the answer's order."""
    if limit <= 0:
        return []
    text = normalize_text(_as_text(text))
    if not text.strip():
        return []
    items = _from_json(text)
    if items is None:
        items = _from_lines(text)
    prompts: list[str] = []
    seen: set[str] = set()
    for item in items:
        # JSON escapes can smuggle control characters back in.
        prompt = normalize_text(item).strip()[:MAX_PROMPT_CHARS].strip()
        if prompt and prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
            if len(prompts) == limit:
                break
    return prompts


def _as_text(text: Any) -> str:
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    return text if isinstance(text, str) else str(text)


def normalize_text(text: str) -> str:
    """The text with line breaks made plain and what is not text (see _NON_TEXT) removed."""
    return _NON_TEXT.sub("", _LINE_BREAKS.sub("\n", text))


# --- JSON answers -------------------------------------------------------------------------


def _from_json(text: str) -> list[str] | None:
    """The prompts of a JSON answer, or None when the answer is not one."""
    stripped = text.strip()
    candidates = [(stripped, "")]
    fenced = _fenced_blocks(text)
    if fenced:
        # Fenced JSON is the payload whatever surrounds it.
        candidates.append(("\n".join(fenced), ""))
    for open_char, close_char in (("[", "]"), ("{", "}")):
        start, end = stripped.find(open_char), stripped.rfind(close_char)
        before, after = stripped[:start], stripped[end + 1 :]
        # Only a value that fills whole lines: "[" in mid-line is inside some prompt.
        if 0 <= start < end and _line_edge(before, after):
            candidates.append((stripped[start : end + 1], before + "\n" + after))
    for candidate, outside in candidates:
        # An embedded JSON value is only the answer if everything around it is chatter;
        # otherwise it is likely a prompt that happens to contain JSON.
        if outside.strip() and _from_lines(outside):
            continue
        value = _loads(candidate)
        if value is None:
            continue
        prompts = _json_prompts(value, depth=0)
        if prompts:
            return prompts
    return None


def _line_edge(before: str, after: str) -> bool:
    starts_line = not before or before.endswith("\n") or before.rstrip().endswith(":")
    return starts_line and (not after or after.startswith("\n"))


def _loads(candidate: str) -> Any:
    for attempt in (candidate, re.sub(r",\s*([\]}])", r"\1", candidate)):
        try:
            return json.loads(attempt, strict=False)
        except (ValueError, RecursionError):
            continue
    return None


def _json_prompts(value: Any, depth: int) -> list[str]:
    if depth > 4:
        return []
    if isinstance(value, str):
        return [value] if depth == 0 else []
    if isinstance(value, list):
        return [p for p in (_json_item(v) for v in value) if p]
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in _CONTAINER_KEYS:
            if key in lowered:
                found = _json_prompts(lowered[key], depth + 1)
                if found:
                    return found
        for key in _ITEM_KEYS:
            if isinstance(lowered.get(key), str) and depth == 0:
                return [lowered[key]]
        # An unknown object is a container only when it holds nothing but one list; an object
        # with several fields is more likely a JSON-shaped prompt.
        if len(value) == 1:
            return _json_prompts(next(iter(value.values())), depth + 1)
    return []


def _json_item(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in _ITEM_KEYS:
            if isinstance(lowered.get(key), str):
                return lowered[key]
        strings = [v for v in value.values() if isinstance(v, str)]
        return strings[0] if strings else None
    return None


# --- Line-by-line answers -----------------------------------------------------------------


def _split_fences(text: str) -> list[tuple[str, bool]]:
    """Each line with whether it lies inside a code fence; fence lines themselves are dropped."""
    lines: list[tuple[str, bool]] = []
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            # "```foo```" on one line is inline code, not a fence.
            rest = _FENCE.sub("", line, count=1).strip()
            if rest.endswith(("```", "~~~")) and len(rest) > 3:
                in_fence = not in_fence
                lines.append((rest[:-3], False))
            continue
        lines.append((line, in_fence))
    return lines


def _fenced_blocks(text: str) -> list[str]:
    return [line for line, in_fence in _split_fences(text) if in_fence and line.strip()]


def _from_lines(text: str) -> list[str]:
    lines = _split_fences(text)
    fenced = [(line, True) for line, in_fence in lines if in_fence]
    # When the answer fences anything, the fence holds the prompts and the rest is chatter.
    for chosen in (fenced, lines) if any(line.strip() for line, _ in fenced) else (lines,):
        items = _items(chosen)
        if items:
            return items
    return []


def _items(lines: list[tuple[str, bool]]) -> list[str]:
    parsed: list[tuple[str, bool]] = []
    refused = False
    for line, in_fence in lines:
        for piece in _split_inline_list(line):
            result = _parse_line(piece, in_fence)
            if result is None:
                continue
            item, structured = result
            if not structured and _is_refusal(item):
                # A refusal that opens the answer makes its other plain lines suspect too.
                refused = refused or not parsed
                continue
            parsed.append((item, structured))
    return [item for item, structured in parsed if structured or not refused]


def _split_inline_list(line: str) -> list[str]:
    """Split "1. a 2. b 3. c" into its items; anything else stays one line."""
    stripped = line.strip()
    if not re.match(r"^1[.)]\s", stripped):
        return [line]
    cuts: list[int] = []
    expected = 1
    style = stripped[1]
    for match in _INLINE_NUMBER.finditer(stripped):
        if int(match.group(1)) == expected and match.group(2) == style:
            cuts.append(match.start(1))
            expected += 1
    if len(cuts) < 2:
        return [line]
    cuts.append(len(stripped))
    pieces = [stripped[a:b] for a, b in zip(cuts, cuts[1:])]
    # "1. 2. 3." is a prompt about numbers, not a list of empty items.
    if any(not _NUMBERING.sub("", piece.strip() + " ", count=1).strip() for piece in pieces):
        return [line]
    return pieces


def _parse_line(line: str, in_fence: bool) -> tuple[str, bool] | None:
    """The prompt on one line and whether it was marked as a list item, or None for no prompt."""
    item = line.strip()
    if not item or _RULE.match(item) or _JSON_SCAFFOLD.match(item):
        return None
    if not in_fence and _HEADER.match(item):
        return None
    # An empty list item ("-", "3.") is a marker with nothing after it.
    if any(not pattern.sub("", item + " ", count=1).strip() for pattern in (_NUMBERING, _BULLET)):
        return None
    structured = False
    numbered = False
    for _ in range(4):
        before = item
        # Numbering is stripped once: in "1. 2. 3." only the first is a list marker.
        for pattern in (_BULLET, _LABEL) if numbered else (_NUMBERING, _BULLET, _LABEL):
            stripped = pattern.sub("", item, count=1)
            if stripped != item:
                item, structured = stripped.strip(), True
                numbered = numbered or pattern is _NUMBERING
        bold = _strip_bold(item)
        if bold is None:
            return None
        item = bold
        if item == before:
            break
    unquoted = _unquote(item)
    if unquoted != item:
        item, structured = unquoted, True
    if not item:
        return None
    if _NOTE_LABEL.match(item):
        return None
    # "Prompts:" or "1. Numbers:" introduce a group; "def f():" and "x[0]:" are code.
    if not in_fence and item.endswith(":") and not item[:-1].rstrip().endswith((")", "]", "}")):
        return None
    if not structured and _is_commentary(item):
        return None
    return item, structured


def _strip_bold(item: str) -> str | None:
    """Unwrap **bold**/__bold__ at the start of an item; drop bold labels like "**Prompt 1:**"."""
    match = _BOLD.match(item)
    if not match:
        return item
    inner, rest = match.group(2).strip(), match.group(3)
    if not rest.strip():
        return inner
    label = inner.rstrip(":").strip()
    if inner.endswith(":") or rest.lstrip().startswith(":") or _is_number_label(label):
        if _NOTE_LABEL.match(label + ":"):
            return None
        return rest.lstrip().lstrip(":").strip()
    return inner + rest


def _is_number_label(label: str) -> bool:
    return bool(re.fullmatch(r"(?:prompt\s*)?#?\(?\d{1,3}[.)]?", label, re.IGNORECASE))


def _unquote(item: str) -> str:
    """Remove quotes around a whole item, or around a prompt followed by an explanation."""
    item = item.strip()
    # JSON-ish lines keep a trailing comma after the closing quote.
    if len(item) >= 3 and item[-1] in ",;" and any(item[-2] in g for g in _QUOTE_GROUPS):
        item = item[:-1].rstrip()
    for group in _QUOTE_GROUPS:
        if len(item) < 2 or item[0] not in group:
            continue
        if item[-1] in group and len(item) >= 2:
            inner = item[1:-1]
            if not _has_inner_quote(inner, group):
                return inner.strip()
        # '"The cat sat" - animal words' or '"The cat sat" (animals)'.
        for index in range(1, len(item)):
            if item[index] in group:
                after = item[index + 1 :]
                if re.match(r"^\s+[-–—]\s+\S|^\s*\(.*\)\s*$", after):
                    inner = item[1:index]
                    if inner.strip() and not _has_inner_quote(inner, group):
                        return inner.strip()
                break
    return item


def _has_inner_quote(inner: str, group: str) -> bool:
    """Whether `inner` holds a quote mark (beside a space), not just an apostrophe like "it's"."""
    for index, char in enumerate(inner):
        if char in group:
            before = inner[index - 1] if index > 0 else " "
            after = inner[index + 1] if index + 1 < len(inner) else " "
            if before.isspace() or after.isspace():
                return True
    return False


def _plain(item: str) -> str:
    return " ".join(item.replace("’", "'").replace("‘", "'").split()).lower()


def _is_refusal(item: str) -> bool:
    plain = _plain(item)
    return any(marker in plain for marker in REFUSAL_MARKERS)


def _is_commentary(item: str) -> bool:
    plain = _plain(item)
    if _BARE_INTERJECTION.match(plain) or _CLOSING_REMARK.match(plain):
        return True
    if _INTRO.match(plain) and _INTRO_TOPIC.search(plain):
        return True
    return bool(_REMARK.match(plain) and _REMARK_TOPIC.search(plain))

"""Real text to compare a neuron's found prompts against: a corpus cut into short snippets.

The default corpus is always there offline: the docstrings and comments of the Python standard
library that runs this code (its test folders and site-packages left out). `--corpus PATH` takes
a UTF-8 text file, whose paragraphs (separated by blank lines) are the texts, or a folder, whose
.txt and .md files are read the same way and whose .py files give their docstrings and comments,
like the standard library's; hidden files and folders are skipped. A .jsonl, .json or .parquet file,
or `hf:NAME[:CONFIG[:SPLIT]]` for a Hugging Face dataset, is read through the `datasets` library,
streamed (hf_corpus.py): each row's text is one text, and reading stops once the corpus has its
cap of snippets, at most MAX_SNIPPETS_PER_ROW of them from one row.

Every text is whitespace-normalised, texts of fewer than MIN_WORDS words are dropped (pragmas
such as `# noqa`, headings), and each text is cut into snippets of at most MAX_TOKENS tokens of
the subject model, between words where the text allows it. Duplicates are dropped, the order is
the files' sorted order and, inside a file, the text's, so the same corpus gives the same
snippets on every machine with the same tokenizer (a hub dataset: while the hub serves the same rows).
"""

from __future__ import annotations

import ast
import hashlib
import io
import logging
import os
import re
import sysconfig
import threading
import tokenize
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from neuron_search.services.dataset.hf_corpus import DATASET_SUFFIXES, DatasetSpec, dataset_texts, file_spec, hub_spec, is_hub_reference
from neuron_search.services.errors import UserError
from neuron_search.services.model.text_tokens import encode_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("neuron_search")

MAX_TOKENS = 64
MIN_WORDS = 3
# The full standard library gives tens of thousands of snippets (README, "Dataset examples"), too
# many to scan by default on a CPU; this many, spread over the whole library, is still more than
# the 4,000 real snippets a dataset maximum is compared on.
DEFAULT_MAX_SNIPPETS = 5_000
STDLIB_SKIPPED = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
TEXT_SUFFIXES = (".txt", ".md")
# A dataset's row is often a whole document (a Pile row averages thousands of tokens): its first few
# snippets only, so that a capped corpus spans many documents rather than the first few.
MAX_SNIPPETS_PER_ROW = 4
_CODING_LINE = re.compile(r"coding[:=]")
# The rules below are part of every corpus fingerprint, as the code that was loaded: a change of
# the rules makes old cached scans unreachable instead of silently reused.
_RULES = hashlib.sha256(Path(__file__).read_bytes() + Path(__file__).with_name("hf_corpus.py").read_bytes()).digest()


# The distinct snippets of the last few corpora cut in this process, per tokenizer and keyed by the
# corpus fingerprint (content and rules) and the token limit: extracting and cutting the standard
# library takes ~35 s on 2 CPU cores, and a search with --seed-corpus after an exemplars scan of
# the same corpus (or a sweep's neurons) would otherwise pay it again.
_KEPT_CORPORA = 2
_cutting = threading.Lock()
_distinct_snippets: weakref.WeakKeyDictionary[object, dict[tuple[str, int], list[str]]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CorpusSource:
    """Which files a corpus reads and how; cheap to build, so a cached scan is found without
    extracting any text."""

    description: str
    files: tuple[Path, ...]
    paragraphs: bool  # a single text file given by the user: paragraphs whatever its suffix
    dataset: DatasetSpec | None = None  # read through the `datasets` library, streamed (hf_corpus.py)

    def describe(self) -> str:
        """The corpus in words; a dataset's says which column was read once it was."""
        return self.dataset.describe() if self.dataset is not None else self.description

    def fingerprint(self) -> str:
        """Changes whenever a file's content, the file list, the dataset (name, config, split, column)
        or the extraction rules change."""
        digest = hashlib.sha256(_RULES)
        digest.update(f"{self.paragraphs}".encode())
        if self.dataset is not None:
            spec = self.dataset
            digest.update(repr((spec.builder, spec.config, spec.split, spec.text_column, spec.data_file)).encode())
        for path in self.files:
            digest.update(str(path).encode() + b"\0")
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError as error:
                raise UserError(
                    f"Cannot read {path} ({error}). Make the corpus readable, or give --corpus another file or folder."
                ) from None
        return digest.hexdigest()


def corpus_source(path: str | Path | None = None, text_column: str | None = None) -> CorpusSource:
    """The standard library's docstrings and comments when path is None, else a text file or folder,
    a .jsonl, .json or .parquet file, or hf:NAME[:CONFIG[:SPLIT]] (text_column: a dataset's column)."""
    if path is not None and is_hub_reference(path):
        spec = hub_spec(str(path), text_column)
        return CorpusSource(spec.describe(), (), False, spec)
    if path is None:
        _no_column(text_column, "the default corpus")
        root = Path(sysconfig.get_paths()["stdlib"])
        files = tuple(_walk(root, (".py",), skip=STDLIB_SKIPPED))
        return CorpusSource(f"docstrings and comments of the Python standard library ({root})", files, False)
    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() in DATASET_SUFFIXES:
        spec = file_spec(path, text_column)
        return CorpusSource(spec.describe(), (path,), False, spec)
    _no_column(text_column, str(path))
    if path.is_file():
        return CorpusSource(f"paragraphs of {path}", (path,), True)
    if path.is_dir():
        files = tuple(_walk(path, TEXT_SUFFIXES + (".py",), skip=set()))
        return CorpusSource(f"{len(files)} .txt, .md and .py files under {path}", files, False)
    raise UserError(
        f"The corpus {path} does not exist. Give --corpus a UTF-8 text file (paragraphs separated by "
        "blank lines), a folder of .txt, .md and .py files, a .jsonl, .json or .parquet file, or "
        "hf:NAME[:CONFIG[:SPLIT]] for a Hugging Face dataset (hf:NeelNanda/pile-10k), or leave it out to "
        "use the Python standard library's docstrings and comments."
    )


def run_corpus(corpus: str, text_column: str = "") -> CorpusSource | None:
    """A search's --corpus and --text-column as a source; None for the default corpus (empty)."""
    if not corpus:
        _no_column(text_column or None, "the default corpus")
        return None
    return corpus_source(corpus, text_column or None)


def _no_column(text_column: str | None, corpus: str) -> None:
    if text_column:
        raise UserError(
            f"--text-column {text_column!r} names a column of a dataset, but the corpus is {corpus}: give --corpus "
            "a .jsonl, .json or .parquet file or hf:NAME, or leave --text-column out."
        )


def check_cap(source: CorpusSource, max_snippets: int) -> None:
    """A hub dataset is streamed up to its cap: with none (0) it would be read whole."""
    if source.dataset is not None and source.dataset.on_hub and max_snippets <= 0:
        raise UserError(
            f"--max-snippets 0 would read all of {source.dataset.label()}: a Hugging Face dataset is streamed "
            f"and read only up to its cap. Give --max-snippets a number (default {DEFAULT_MAX_SNIPPETS:,})."
        )


def _walk(root: Path, suffixes: tuple[str, ...], skip: set[str]) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for name in sorted(names):
            if name.endswith(suffixes) and not name.startswith("."):
                yield Path(folder) / name


def build_snippets(
    source: CorpusSource,
    tokenizer: PreTrainedTokenizerBase,
    max_snippets: int = DEFAULT_MAX_SNIPPETS,
    max_tokens: int = MAX_TOKENS,
) -> list[str]:
    """The corpus as distinct snippets of 1 to max_tokens tokens of `tokenizer`.

    With more than max_snippets snippets (0: no cap), evenly spaced ones are kept, so that a capped
    corpus still spans all of its files rather than the first few alphabetically. A dataset is read
    in order and only until it gives max_snippets snippets (`_dataset_snippets`).
    """
    check_cap(source, max_snippets)
    key = (source.fingerprint(), max_tokens) + ((max_snippets,) if source.dataset is not None else ())
    with _cutting:
        cached = _distinct_snippets.setdefault(tokenizer, {})
        if key not in cached:
            if source.dataset is not None:
                distinct = _dataset_snippets(source.dataset, tokenizer, max_snippets, max_tokens)
            else:
                texts = [t for t in _texts(source) if len(t.split()) >= MIN_WORDS]
                distinct = list(dict.fromkeys(cut(texts, tokenizer, max_tokens)))
            while len(cached) >= _KEPT_CORPORA:
                cached.pop(next(iter(cached)))
            cached[key] = distinct
        snippets = list(cached[key])
    if not snippets:
        raise UserError(
            f"The corpus ({source.describe()}) holds no text of {MIN_WORDS} words or more. Give "
            "--corpus a UTF-8 text file or a folder of .txt, .md or .py files that holds some."
        )
    if max_snippets and len(snippets) > max_snippets:
        snippets = [snippets[i * len(snippets) // max_snippets] for i in range(max_snippets)]
    return snippets


def _dataset_snippets(spec: DatasetSpec, tokenizer: PreTrainedTokenizerBase, max_snippets: int, max_tokens: int) -> list[str]:
    """The dataset's rows, in order, each cut into its first MAX_SNIPPETS_PER_ROW snippets; reading
    stops at the row that brings the distinct snippets to max_snippets (0: no cap, a local file only)."""
    found: dict[str, None] = {}
    # A row's text is cut only as far as its first snippets reach: a generous bound on their length.
    longest = MAX_SNIPPETS_PER_ROW * max_tokens * 16
    for raw in dataset_texts(spec):
        text = normalise(raw[:longest])
        if len(raw) > longest:
            text = text.rsplit(" ", 1)[0]  # between words
        if len(text.split()) < MIN_WORDS:
            continue
        for snippet in cut([text], tokenizer, max_tokens)[:MAX_SNIPPETS_PER_ROW]:
            found[snippet] = None
            if max_snippets and len(found) >= max_snippets:
                return list(found)
    return list(found)


def _texts(source: CorpusSource) -> Iterator[str]:
    for path in source.files:
        try:
            raw = path.read_bytes()
            if path.suffix == ".py" and not source.paragraphs:
                texts = python_texts(raw)
            else:
                texts = paragraphs(raw.decode("utf-8"))
        except (SyntaxError, ValueError, tokenize.TokenError) as error:  # UnicodeDecodeError is a ValueError
            if source.paragraphs:
                raise UserError(
                    f"Cannot read the corpus {path} as UTF-8 text ({error}). Give --corpus a UTF-8 text file."
                ) from None
            log.info("Skipping %s: %s", path, error)
            continue
        yield from (normalise(t) for t in texts)


def normalise(text: str) -> str:
    return " ".join(text.split())


def paragraphs(text: str) -> list[str]:
    return re.split(r"\n[ \t]*\n", text)


def python_texts(source: bytes) -> list[str]:
    """A Python file's docstrings and comments in the order they appear; consecutive comment lines
    form one text. Raises SyntaxError (and friends) for a file Python cannot parse."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                found.append((node.body[0].lineno, docstring))
    block: list[str] = []  # consecutive full-line comments: one text
    last_row = -1
    for token in tokenize.tokenize(io.BytesIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row = token.start[0]
        if row <= 2 and (token.string.startswith("#!") or _CODING_LINE.search(token.string)):
            continue
        full_line = not token.line[: token.start[1]].strip()
        if block and not (full_line and row == last_row + 1):
            found.append((last_row - len(block) + 1, " ".join(block)))
            block = []
        text = token.string.lstrip("#").strip()
        if full_line:
            block.append(text)
            last_row = row
        else:  # a comment after code is about that line alone
            found.append((row, text))
    if block:
        found.append((last_row - len(block) + 1, " ".join(block)))
    return [text for _, text in sorted(found, key=lambda item: item[0])]


def cut(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int = MAX_TOKENS) -> list[str]:
    """Each text cut into consecutive snippets of at most max_tokens tokens, between words unless a
    single word is longer than that. Texts are whitespace-normalised (single spaces)."""
    snippets: list[str] = []
    for text, encoded in zip(texts, _encode(texts, tokenizer, offsets=True)):
        snippets.extend(_cut_one(text, encoded["offset_mapping"], max_tokens))
    # A snippet is tokenized again on its own, where the tokens at its edges may come out
    # differently: the few that grow past the limit are cut again, at a token boundary.
    checked: list[str] = []
    for snippet, encoded in zip(snippets, _encode(snippets, tokenizer)):
        ids = encoded["input_ids"]
        if len(ids) <= max_tokens:
            checked.append(snippet)
        else:
            checked.extend(_split_ids(ids, tokenizer, max_tokens))
    return [s for s in checked if s]


def _cut_one(text: str, offsets: list[tuple[int, int]], max_tokens: int) -> list[str]:
    def starts_word(j: int) -> bool:
        begin = offsets[j][0]
        return begin > 0 and (text[begin] == " " or text[begin - 1] == " ")

    out = []
    start, n = 0, len(offsets)
    while start < n:
        end = min(start + max_tokens, n)
        if end < n:
            end = next((j for j in range(end, start, -1) if starts_word(j)), end)
        out.append(text[offsets[start][0] : offsets[end - 1][1]].strip())
        start = end
    return out


def _split_ids(ids: list[int], tokenizer, max_tokens: int) -> list[str]:
    out = []
    for start in range(0, len(ids), max_tokens):
        piece = ids[start : start + max_tokens]
        text = tokenizer.decode(piece).strip()
        # Decoding and encoding again can still merge differently: drop a token until it fits.
        while text and len(_encode([text], tokenizer)[0]["input_ids"]) > max_tokens:
            piece = piece[:-1]
            text = tokenizer.decode(piece).strip()
        out.append(text)
    return out


def _encode(texts: Sequence[str], tokenizer, offsets: bool = False, batch: int = 1024) -> list:
    """Tokenize as SubjectModel measures a prompt (no token added, the names of special and added
    tokens such as `<bos>` or Gemma's `<start_of_image>` kept as text: `encode_text`)."""
    out: list = []
    for start in range(0, len(texts), batch):
        encoded = encode_text(tokenizer, texts[start : start + batch], offsets=offsets)
        if offsets:
            out.extend({"input_ids": ids, "offset_mapping": spans} for ids, spans in encoded)
        else:
            out.extend({"input_ids": ids} for ids in encoded)
    return out

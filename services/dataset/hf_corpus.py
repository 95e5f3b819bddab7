"""Corpora read through the Hugging Face `datasets` library: a hub dataset, or a local .jsonl, .json or .parquet file.

`--corpus hf:NAME[:CONFIG[:SPLIT]]` names a hub dataset (`hf:NeelNanda/pile-10k`,
`hf:HuggingFaceFW/fineweb:sample-10BT:train`, `hf:NAME::validation` for a split without a config;
the split defaults to `train`). It is always streamed (`streaming=True`): rows are read one at a time
and reading stops once the corpus has its --max-snippets snippets (corpus.py), so a dataset is never
downloaded whole. A local file goes through the same path (`load_dataset("json" | "parquet",
data_files=...)`, streamed too). The text is one column: --text-column when given, else the column
named "text", else the first column of strings; the corpus's description says which was read.

Nothing here touches the network until the rows are read, so a cached scan of a hub dataset is found
without it; a hub that cannot be reached (HF_HUB_OFFLINE, no network, a wrong name) ends in one
UserError paragraph. The `datasets` library is imported only when a dataset is read (it takes a few
seconds to import).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuron_search.services.errors import UserError

HUB_PREFIX = "hf:"
DEFAULT_SPLIT = "train"
# A local file of one of these suffixes is read by the `datasets` builder named beside it.
DATASET_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_PART = re.compile(r"[A-Za-z0-9_.+-]*")
_STRING_TYPES = ("string", "large_string")
_LOCAL_HINT = (
    "To use text you have on this machine instead, give --corpus a local .jsonl, .json or .parquet file "
    "(its 'text' column, or the one --text-column names), a UTF-8 text file or a folder of .txt, .md and "
    ".py files; a dataset loaded elsewhere is written to one with `dataset.to_json('corpus.jsonl')`."
)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset corpus: what `load_dataset` is given, and the column asked for (None: found)."""

    builder: str  # a hub name, or "json" / "parquet" for a local file
    config: str | None
    split: str
    text_column: str | None
    data_file: str | None = None  # a local file's absolute path; None: on the hub

    @property
    def on_hub(self) -> bool:
        return self.data_file is None

    def label(self) -> str:
        """hf:NAME[:CONFIG][:SPLIT] as the user can type it again, or the local file's path."""
        if not self.on_hub:
            return str(self.data_file)
        tail = f":{self.config or ''}:{self.split}" if self.split != DEFAULT_SPLIT else (f":{self.config}" if self.config else "")
        return f"{HUB_PREFIX}{self.builder}{tail}"

    def describe(self) -> str:
        """The corpus in words, with the column read (once the rows were read in this process, or named)."""
        column = self.text_column or _found_columns.get(self)
        said = f"column {column!r}" if column else "column 'text' (else its first column of strings)"
        if self.on_hub:
            config = f", config {self.config}" if self.config else ""
            return f"Hugging Face dataset {self.builder} (split {self.split}{config}, streamed), {said}"
        return f"{said} of {self.data_file}"


# The column each dataset read in this process turned out to use: its description says which.
_found_columns: dict[DatasetSpec, str] = {}


def is_hub_reference(corpus: str | Path) -> bool:
    return isinstance(corpus, str) and corpus.startswith(HUB_PREFIX)


def hub_spec(reference: str, text_column: str | None = None) -> DatasetSpec:
    """hf:NAME[:CONFIG[:SPLIT]] as a DatasetSpec; a UserError when it is not one."""
    parts = reference[len(HUB_PREFIX) :].split(":")
    name = parts[0]
    if len(parts) > 3 or not _HUB_NAME.fullmatch(name) or ".." in name or not all(_PART.fullmatch(p) for p in parts[1:]):
        raise UserError(
            f"The corpus {reference!r} is not a Hugging Face dataset reference: write hf:NAME, hf:NAME:CONFIG or "
            "hf:NAME:CONFIG:SPLIT (hf:NAME::SPLIT for a split without a config), NAME as on the hub "
            "(owner/name: letters, digits, '.', '_' and '-'), for instance hf:NeelNanda/pile-10k."
        )
    if Path(name).exists():  # `datasets` would read the local folder of that name instead of the hub's
        raise UserError(
            f"The corpus {reference!r} names a Hugging Face dataset, but {name} is also a file or folder here, "
            "which `datasets` would read instead of the hub's. Run from another folder, or give --corpus the "
            "local file itself (.jsonl, .json, .parquet, a text file or a folder)."
        )
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else DEFAULT_SPLIT
    return DatasetSpec(name, config, split, _column(text_column))


def file_spec(path: Path, text_column: str | None = None) -> DatasetSpec:
    """A local .jsonl, .json or .parquet file, read by `datasets` as a one-split dataset."""
    return DatasetSpec(DATASET_SUFFIXES[path.suffix.lower()], None, "train", _column(text_column), str(path.resolve()))


def _column(text_column: str | None) -> str | None:
    if text_column is not None and not text_column.strip():
        return None
    return text_column


def dataset_texts(spec: DatasetSpec) -> Iterator[str]:
    """The text of each row, in the dataset's order, read one row at a time (stop iterating to stop
    reading). Rows whose text is missing or not a string are skipped. Errors are UserErrors."""
    features, rows = open_rows(spec)
    iterator = iter(rows)
    column = None
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except UserError:
            raise
        except _library_errors() as error:
            raise reading_error(spec, error) from None
        if column is None:
            column = text_column_of(spec, features, row)
            _found_columns[spec] = column
        value = row.get(column)
        if isinstance(value, str):
            yield value


def open_rows(spec: DatasetSpec) -> tuple[dict[str, Any] | None, Iterable[dict[str, Any]]]:
    """The dataset's features (None where the stream does not know them yet) and its rows, streamed."""
    try:
        import datasets  # a few seconds to import: only when a dataset is read
    except ImportError as error:
        raise UserError(
            f"Reading {spec.label()} needs the `datasets` library ({error}); install it with "
            "`pip install datasets`, or give --corpus a UTF-8 text file or folder."
        ) from None
    try:
        if spec.on_hub:
            stream = datasets.load_dataset(spec.builder, spec.config, split=spec.split, streaming=True)
        else:
            stream = datasets.load_dataset(spec.builder, data_files=spec.data_file, split=spec.split, streaming=True)
    except UserError:
        raise
    except _library_errors() as error:
        raise reading_error(spec, error) from None
    return getattr(stream, "features", None), stream


def _library_errors() -> tuple[type[BaseException], ...]:
    """What `datasets` raises for a dataset it cannot read: its own errors, the hub's (OSError, among them
    ConnectionError), pyarrow's (ValueError) and a wrong config or split (ValueError, KeyError)."""
    from datasets.exceptions import DatasetsError

    return (DatasetsError, OSError, ValueError, KeyError, RuntimeError)


def text_column_of(spec: DatasetSpec, features: dict[str, Any] | None, row: dict[str, Any]) -> str:
    """The column named by --text-column, else "text", else the first column of strings."""
    columns = list(features) if features else list(row)
    if spec.text_column is not None:
        if spec.text_column not in columns:
            raise UserError(
                f"The corpus {spec.label()} has no column {spec.text_column!r}; its columns are "
                f"{', '.join(map(repr, columns)) or 'none'}. Give --text-column one of them that holds text."
            )
        return spec.text_column
    strings = [c for c in columns if _holds_strings(c, features, row)]
    if "text" in strings:
        return "text"
    if strings:
        return strings[0]
    raise UserError(
        f"The corpus {spec.label()} has no column of text (its columns: {', '.join(map(repr, columns)) or 'none'}). "
        "Give --text-column the one that holds the text, or another --corpus."
    )


def _holds_strings(column: str, features: dict[str, Any] | None, row: dict[str, Any]) -> bool:
    if features and column in features:
        return getattr(features[column], "dtype", None) in _STRING_TYPES
    return isinstance(row.get(column), str)


def reading_error(spec: DatasetSpec, error: BaseException) -> UserError:
    """One paragraph: what was tried, the likely cause, and how to use a local file instead."""
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    if not spec.on_hub:
        return UserError(
            f"Cannot read the corpus {spec.data_file} through the `datasets` library ({type(error).__name__}: "
            f"{reason}). Check that it is a {Path(spec.data_file).suffix} file of one record per row with a "
            "column of text, or give --corpus a UTF-8 text file or a folder."
        )
    config = f", config {spec.config}" if spec.config else ""
    return UserError(
        f"Cannot read the Hugging Face dataset {spec.builder} (split {spec.split}{config}): streaming it from the "
        f"hub through the `datasets` library failed ({type(error).__name__}: {reason}). Either this machine "
        "cannot reach huggingface.co (it is offline, or HF_HUB_OFFLINE=1 is set), or the name, config or split "
        f"is wrong (check them on https://huggingface.co/datasets/{spec.builder}). {_LOCAL_HINT}"
    )

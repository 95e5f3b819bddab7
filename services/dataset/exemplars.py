"""Dataset examples: the real snippets that drive a neuron highest, the baseline for a found prompt.

A scan measures every neuron of the layer on every snippet at once (`SubjectModel.layer_maxima`,
max over each snippet's tokens, BOS excluded, as a search measures with `--position max`), so
the scan is cached per (model, layer, corpus, snippet cap) under the cache folder: after the
first neuron of a layer, the others cost only the re-measurement of their top-k snippets, which
gives their per-token values, and their cross-entropy under the model (how readable the model finds
them), so a run's report can place them beside its own prompts. A file lock makes the scan of a layer
happen once however many processes ask for it at once: the first scans, the others wait and read it.

A scan that is not in the cache shows its progress from its first second: on the console it is
given (`run.py exemplars`), else a bar on standard error when that is a terminal, else (a search's
log, a notebook, a sweep's worker) a line on standard error when it starts and about every 10%,
with the time it expects to need still.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from rich.console import Console

from neuron_search.services.model.bundled import cache_root
from neuron_search.services.dataset.scan_progress import ScanProgress
from neuron_search.services.dataset.corpus import DEFAULT_MAX_SNIPPETS, MAX_TOKENS, CorpusSource, build_snippets, check_cap, corpus_source
from neuron_search.services.errors import UserError
from neuron_search.services.model.subject_model import EMBEDDED, SubjectModel
from neuron_search.state import Measurement


@dataclass
class Exemplars:
    model: str
    layer: int
    neuron: int
    corpus: str  # what was scanned, in words
    scanned: int  # snippets measured
    records: list[Measurement]  # the top snippets, highest first, with per-token values and xent


def exemplars(
    subject: SubjectModel,
    layer: int,
    neuron: int,
    corpus: CorpusSource | str | Path | None = None,
    top_k: int = 10,
    max_snippets: int = DEFAULT_MAX_SNIPPETS,
    batch_size: int = 32,
    console: Console | None = None,
) -> Exemplars:
    """The neuron's top_k snippets of the corpus (default: the standard library's docstrings and
    comments; a path or hf:NAME as `corpus_source` reads it, or a CorpusSource), measured with their
    per-token values and cross-entropy. The scan's progress shows on `console` if given, else on
    standard error (see the module docstring)."""
    subject.validate(layer, neuron)
    if top_k < 1:
        raise UserError(f"--top-k must be 1 or more, not {top_k}.")
    if max_snippets < 0:
        raise UserError(f"--max-snippets must be 0 (no cap) or more, not {max_snippets}.")
    source = corpus if isinstance(corpus, CorpusSource) else corpus_source(corpus)
    check_cap(source, max_snippets)
    snippets, maxima = layer_scan(subject, layer, source, max_snippets, batch_size, console)
    column = np.nan_to_num(maxima[:, neuron], nan=-np.inf)
    best = np.argsort(-column, kind="stable")[:top_k]
    # With each snippet's cross-entropy, as a gradient run measures its prompts'.
    records = subject.measure([snippets[i] for i in best], layer, neuron, "max", batch_size, fluency=True)
    records.sort(key=lambda r: -r["activation"])
    for record in records:  # not finite for a one-token snippet of a model without BOS: left out
        if record["xent"] is not None and not math.isfinite(record["xent"]):
            record["xent"] = None
    description = source.describe()
    if source.dataset is not None:  # the column found when the scan read it, maybe in another process
        description = _saved_description(cache_root() / "exemplars" / _scan_name(subject, layer, source, max_snippets)) or description
    return Exemplars(subject.name, layer, neuron, description, len(snippets), records)


def layer_scan(
    subject: SubjectModel,
    layer: int,
    source: CorpusSource,
    max_snippets: int = DEFAULT_MAX_SNIPPETS,
    batch_size: int = 32,
    console: Console | None = None,
) -> tuple[list[str], np.ndarray]:
    """The corpus's snippets and every neuron of the layer at its max over each: [snippets, d_mlp].

    Read from the cache when this model, layer, corpus and cap were scanned before.
    """
    name = _scan_name(subject, layer, source, max_snippets)
    folder = cache_root() / "exemplars" / name
    cached = _read_scan(folder, subject.d_mlp)
    if cached is not None:
        return cached
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One scan of a layer at a time, across processes (a sweep's workers, two runs side by side) and
    # threads: a second caller waits for the first one's scan and reads it from the cache. The lock is
    # the operating system's, so a process that dies while scanning releases it.
    lock = FileLock(folder.parent / f".{name}.lock", thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(
            f"scanning layer {layer} of {model_slug(subject.name)}: another process is scanning it; waiting for "
            "its scan, which is then read from the cache",
            console,
        )
        lock.acquire()
    try:
        cached = _read_scan(folder, subject.d_mlp)
        if cached is not None:
            return cached
        snippets, maxima = _scan(subject, layer, source, max_snippets, batch_size, console)
        _write_scan(folder, source.describe(), snippets, maxima)
    finally:
        lock.release()
    return snippets, maxima


def _scan(
    subject: SubjectModel, layer: int, source: CorpusSource, max_snippets: int, batch_size: int, console: Console | None
) -> tuple[list[str], np.ndarray]:
    """Cut the corpus and measure every neuron of the layer on every snippet, with progress shown."""
    with ScanProgress(f"scanning layer {layer} of {model_slug(subject.name)}", console) as progress:
        with subject.exclusive:  # the tokenizer may not be used by two threads at once
            snippets = build_snippets(source, subject.tokenizer, max_snippets)
        progress.start(len(snippets))
        maxima = np.empty((len(snippets), subject.d_mlp), dtype=np.float32)
        # Snippets of similar length share a batch, so little of each forward pass is padding.
        order = sorted(range(len(snippets)), key=lambda i: len(snippets[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            maxima[rows] = subject.layer_maxima([snippets[i] for i in rows], layer, batch_size)
            progress.advance(len(rows))
    return snippets, maxima


def seed_corpus_scan(subject: SubjectModel, layer: int, console: Console | None = None, source: CorpusSource | None = None) -> int:
    """Make sure the scan a search's --seed-corpus reads (`exemplars`' defaults: the standard library
    unless `source` is given (the search's --corpus), DEFAULT_MAX_SNIPPETS) is in the cache, scanning it
    here if it is not; returns its snippet count. A sweep calls it once before its workers start, so
    they read the scan instead of each making it."""
    snippets, _ = layer_scan(subject, layer, source or corpus_source(None), DEFAULT_MAX_SNIPPETS, console=console)
    return len(snippets)


def _say(text: str, console: Console | None) -> None:
    if console is not None:
        console.print(text, highlight=False, markup=False)
        return
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def cached_layer_scan(
    subject: SubjectModel, layer: int, source: CorpusSource | None = None, max_snippets: int = DEFAULT_MAX_SNIPPETS
) -> tuple[list[str], np.ndarray] | None:
    """`layer_scan`'s result when it is in the cache (default corpus), else None: nothing is scanned."""
    source = source or corpus_source(None)
    return _read_scan(cache_root() / "exemplars" / _scan_name(subject, layer, source, max_snippets), subject.d_mlp)


def real_text_holdout(
    subject: SubjectModel, layer: int, neuron: int, n: int = 10, seed: int = 0, source: CorpusSource | None = None
) -> tuple[list[str], list[str]] | None:
    """Real text to score an explanation on (detection), when the layer's scan of the corpus (`source`,
    a search's --corpus; None: the default corpus) is cached (a gradient run's --seed-corpus or
    `run.py exemplars` made it), else None.

    High: the neuron's top `n` snippets. Low: `n` snippets drawn (by `seed`) from those at or below
    the neuron's median over the corpus, so ordinary text on which it does not stand out.
    """
    cached = cached_layer_scan(subject, layer, source)
    if cached is None:
        return None
    snippets, maxima = cached
    column = np.nan_to_num(maxima[:, neuron], nan=-np.inf)
    order = np.argsort(-column, kind="stable")
    high = [snippets[i] for i in order[:n]]
    below = np.flatnonzero(column <= np.median(column))
    picked = np.random.default_rng(seed).choice(below, size=min(n, len(below)), replace=False) if len(below) else []
    return high, [snippets[i] for i in sorted(picked)]


def _scan_name(subject: SubjectModel, layer: int, source: CorpusSource, max_snippets: int) -> str:
    key = json.dumps([_model_identity(subject.name), layer, source.fingerprint(), max_snippets, MAX_TOKENS])
    return f"{model_slug(subject.name)}-L{layer}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _model_identity(name: str) -> list:
    """A hub name or 'embedded' names its weights; a local folder can be rewritten in place, so its
    files' sizes and times are part of it."""
    folder = Path(name)
    if name == EMBEDDED or not folder.is_dir():
        return [name]
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [str(folder.resolve())] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def model_slug(name: str) -> str:
    """A model name as one safe file name: a hub name's slash or a folder's path becomes readable."""
    base = Path(name).name if name != EMBEDDED and Path(name).is_dir() else name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "model"


def _read_scan(folder: Path, d_mlp: int) -> tuple[list[str], np.ndarray] | None:
    try:
        snippets = json.loads((folder / "snippets.json").read_text(encoding="utf-8"))["snippets"]
        maxima = np.load(folder / "maxima.npy")
    except (OSError, ValueError, KeyError):
        return None
    return (snippets, maxima) if maxima.shape == (len(snippets), d_mlp) else None


def _saved_description(folder: Path) -> str | None:
    """The corpus's description as its cached scan saved it (a dataset's says which column was read)."""
    try:
        description = json.loads((folder / "snippets.json").read_text(encoding="utf-8")).get("corpus")
    except (OSError, ValueError, AttributeError):
        return None
    return description if isinstance(description, str) else None


def _write_scan(folder: Path, description: str, snippets: list[str], maxima: np.ndarray) -> None:
    """The folder only ever appears complete: written beside it, then renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        (scratch / "snippets.json").write_text(json.dumps({"corpus": description, "snippets": snippets}), encoding="utf-8")
        np.save(scratch / "maxima.npy", maxima)
        scratch.chmod(0o755)  # mkdtemp makes it private; the cache is readable like any other
        if folder.exists():  # unreadable leftovers (a second process that finished first is as good)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(scratch, folder)
        except OSError:  # another process renamed its identical scan into place first
            pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Saved examples: where they are, and what exemplars.json holds


def exemplar_folder(results_dir: str | Path, model: str, layer: int, neuron: int) -> Path:
    """RESULTS_DIR/exemplars/<model>-L<layer>-N<neuron>: where `run.py exemplars` saves a neuron's
    examples, and where a run's report (its run folder is in the same RESULTS_DIR) looks for them."""
    return Path(results_dir) / "exemplars" / f"{model_slug(model)}-L{layer}-N{neuron}"


def read_exemplars(results_dir: str | Path, model: str, layer: int, neuron: int) -> dict | None:
    """The saved exemplars.json of this model, layer and neuron, or None when there is none that
    can be read (or it holds no record)."""
    path = exemplar_folder(results_dir, model, layer, neuron) / "exemplars.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or (document.get("layer"), document.get("neuron")) != (layer, neuron):
        return None
    return document if document.get("records") else None


def exemplars_document(result: Exemplars) -> dict:
    """What exemplars.json holds (services/reports/exemplars_page.py writes it, beside its page):
    the scan's description and each top snippet with its peak token's text."""
    return {
        "model": result.model,
        "layer": result.layer,
        "neuron": result.neuron,
        "corpus": result.corpus,
        "snippets_scanned": result.scanned,
        "max_tokens": MAX_TOKENS,
        "records": [_record(r) for r in result.records],
    }


def _record(m: Measurement) -> dict:
    """A measurement with its peak token's text beside its index, as the run report's records have."""
    return {
        "prompt": m["prompt"],
        "activation": m["activation"],
        "peak": m["peak"],
        "token": m["tokens"][m["peak"]] if m["tokens"] else "",
        "tokens": m["tokens"],
        "values": m["values"],
        "xent": m.get("xent"),
    }

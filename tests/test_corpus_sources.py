"""Corpora read through the `datasets` library: local .jsonl and .parquet files, a hub name offline, the scan's cache key.

The hub cannot be reached here (conftest sets HF_HUB_OFFLINE=1): the code a hub dataset goes through
(streamed rows, the text column, the cap) is the code a local file goes through, tested on files
written here; a hub name gives the one-paragraph error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from neuron_search.services.dataset import hf_corpus
from neuron_search.services.dataset.corpus import MAX_SNIPPETS_PER_ROW, MAX_TOKENS, build_snippets, corpus_source, cut, normalise, run_corpus
from neuron_search.services.dataset.exemplars import _scan_name, exemplars
from neuron_search.services.errors import UserError
from neuron_search.services.model.subject_model import SubjectModel

ROOT = Path(__file__).resolve().parent.parent
ROWS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital.",
    "too short",  # fewer than three words: dropped
    "Numbers like  3.14\nand 2.718 are constants.",  # whitespace-normalised
    "The quick brown fox jumps over the lazy dog.",  # a duplicate: dropped
    "[bold]not markup[/bold] <b>nor HTML</b> /etc/passwd is text, not a path",
]
EXPECTED = [normalise(r) for r in ROWS if len(r.split()) >= 3][:3] + [ROWS[-1]]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    import pandas as pd

    pd.DataFrame(columns).to_parquet(path)
    return path


@pytest.fixture
def rows_read(monkeypatch) -> list[int]:
    """How many rows `datasets` handed over, counted as they are read."""
    count = [0]
    original = hf_corpus.open_rows

    def counted(spec):
        features, rows = original(spec)

        def each():
            for row in rows:
                count[0] += 1
                yield row

        return features, each()

    monkeypatch.setattr(hf_corpus, "open_rows", counted)
    return count


def test_a_jsonl_file_gives_its_text_column_as_snippets(tokenizer, tmp_path, rows_read):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"id": i, "text": t} for i, t in enumerate(ROWS)])
    source = corpus_source(path)
    assert source.dataset is not None and source.dataset.builder == "json"
    assert build_snippets(source, tokenizer, max_snippets=0) == EXPECTED
    assert rows_read[0] == len(ROWS)
    assert source.describe() == f"column 'text' of {path.resolve()}"


def test_a_parquet_file_without_a_text_column_reads_its_first_column_of_strings(tokenizer, tmp_path):
    path = write_parquet(tmp_path / "rows.parquet", {"n": list(range(len(ROWS))), "body": ROWS, "title": [f"title number {i} here" for i in range(len(ROWS))]})
    source = corpus_source(path)
    assert build_snippets(source, tokenizer, max_snippets=0) == EXPECTED
    assert "column 'body'" in source.describe()
    named = corpus_source(path, text_column="title")
    assert build_snippets(named, tokenizer, max_snippets=0) == [f"title number {i} here" for i in range(len(ROWS))]
    assert "column 'title'" in named.describe()
    with pytest.raises(UserError, match=r"no column 'missing'; its columns are 'n', 'body', 'title'"):
        build_snippets(corpus_source(path, text_column="missing"), tokenizer, max_snippets=0)
    numbers = write_parquet(tmp_path / "numbers.parquet", {"n": [1, 2], "m": [3.0, 4.0]})
    with pytest.raises(UserError, match="no column of text"):
        build_snippets(corpus_source(numbers), tokenizer, max_snippets=0)


def test_a_long_row_gives_its_first_snippets_only(tokenizer, tmp_path):
    words = "the quick brown fox jumps over the lazy dog what is the capital of France Paris".split()
    long = " ".join(words[i % len(words)] + str(i) for i in range(2_000))
    path = write_jsonl(tmp_path / "long.jsonl", [{"text": long}, {"text": "A second row of text."}])
    snippets = build_snippets(corpus_source(path), tokenizer, max_snippets=0)
    assert snippets == cut([long], tokenizer)[:MAX_SNIPPETS_PER_ROW] + ["A second row of text."]
    assert all(len(tokenizer(s, add_special_tokens=False)["input_ids"]) <= MAX_TOKENS for s in snippets)


def test_the_cap_stops_reading_once_enough_snippets_exist(tokenizer, tmp_path, rows_read):
    path = write_jsonl(tmp_path / "many.jsonl", [{"text": f"Row number {i} of the corpus."} for i in range(2_000)])
    capped = build_snippets(corpus_source(path), tokenizer, max_snippets=25)
    assert capped == [f"Row number {i} of the corpus." for i in range(25)]
    assert rows_read[0] == 25  # the 26th row was never read
    rows_read[0] = 0
    assert len(build_snippets(corpus_source(path), tokenizer, max_snippets=0)) == 2_000
    assert rows_read[0] == 2_000


def test_a_hub_name_offline_is_one_paragraph_that_says_what_to_do(tokenizer):
    source = corpus_source("hf:NeelNanda/pile-10k")  # nothing is read yet: a cached scan needs no network
    assert source.dataset.on_hub and source.files == ()
    with pytest.raises(UserError) as raised:
        build_snippets(source, tokenizer, max_snippets=10)
    message = str(raised.value)
    assert "\n" not in message
    for said in ("NeelNanda/pile-10k", "split train", "streaming it from the hub", "offline", "HF_HUB_OFFLINE", "name, config or split", ".jsonl"):
        assert said in message, said
    with pytest.raises(UserError, match="would read all of hf:NeelNanda/pile-10k"):
        build_snippets(source, tokenizer, max_snippets=0)


def test_run_py_exemplars_on_a_hub_name_offline_ends_in_the_paragraph_without_a_traceback(tiny_model_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANGSMITH_TRACING": "false", "COLUMNS": "2000", "NEURON_SEARCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "exemplars", "--corpus", "hf:NeelNanda/pile-10k:default:train", "--model", str(tiny_model_dir),
         "--layer", "1", "--neuron", "3", "--device", "cpu", "--max-snippets", "50", "--results-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    error = [line for line in done.stdout.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "HF_HUB_OFFLINE" in error[0] and "config default" in error[0], out


def test_hub_references_are_checked_before_anything_is_read(tmp_path, monkeypatch):
    spec = corpus_source("hf:HuggingFaceFW/fineweb:sample-10BT:train").dataset
    assert (spec.builder, spec.config, spec.split, spec.text_column) == ("HuggingFaceFW/fineweb", "sample-10BT", "train", None)
    assert corpus_source("hf:a/b::validation").dataset.split == "validation"
    assert corpus_source("hf:a/b::validation").dataset.label() == "hf:a/b::validation"
    for bad in ("hf:../etc", "hf:/etc/passwd", "hf:a/b/c", "hf:a:b:c:d", "hf:", "hf:a/b:con fig"):
        with pytest.raises(UserError, match="not a Hugging Face dataset reference"):
            corpus_source(bad)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    with pytest.raises(UserError, match="also a file or folder here"):
        corpus_source("hf:local")
    (tmp_path / "c.txt").write_text("Some words of text here.", encoding="utf-8")
    with pytest.raises(UserError, match="names a column of a dataset"):
        corpus_source(tmp_path / "c.txt", text_column="body")
    with pytest.raises(UserError, match="names a column of a dataset"):
        run_corpus("", "body")
    assert run_corpus("", "") is None and run_corpus("hf:a/b", "body").dataset.text_column == "body"


def test_the_scan_cache_key_differs_by_corpus_config_split_column_and_cap(tmp_path):
    subject = SimpleNamespace(name="gpt2")
    key = lambda corpus, column=None, cap=100: _scan_name(subject, 9, corpus_source(corpus, column), cap)  # noqa: E731
    names = [
        key("hf:NeelNanda/pile-10k"),
        key("hf:monology/pile-uncopyrighted"),
        key("hf:NeelNanda/pile-10k:other"),
        key("hf:NeelNanda/pile-10k::validation"),
        key("hf:NeelNanda/pile-10k", "body"),
        key("hf:NeelNanda/pile-10k", cap=200),
    ]
    assert len(set(names)) == len(names)
    assert key("hf:NeelNanda/pile-10k") == key("hf:NeelNanda/pile-10k:" + ":train")  # the same corpus, spelled out
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "one two three"}])
    before = key(path)
    assert before != key(path, "text")
    write_jsonl(path, [{"text": "one two four"}])
    assert key(path) != before


def test_exemplars_over_a_jsonl_file_say_which_column_they_read(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "rows.jsonl", [{"id": i, "body": t, "note": "the same note for every row"} for i, t in enumerate(ROWS)])
    subject = SubjectModel.load(str(tiny_model_dir), "cpu")
    found = exemplars(subject, 1, 3, corpus_source(path), top_k=3, max_snippets=0)
    assert found.scanned == len(EXPECTED) and len(found.records) == 3
    assert {r["prompt"] for r in found.records} <= set(EXPECTED)
    assert found.corpus == f"column 'body' of {path.resolve()}"  # the first column of strings
    named = exemplars(subject, 1, 3, corpus_source(path, "note"), top_k=3, max_snippets=0)
    assert named.corpus == f"column 'note' of {path.resolve()}" and named.scanned == 1


def test_a_run_on_its_own_corpus_is_told_to_save_exemplars_from_that_corpus():
    from neuron_search.services.reports.report_page import _exemplars_hint

    settings = {"neuron": 3, "layer": 1, "model": "gpt2", "corpus": "hf:NeelNanda/pile-10k", "text_column": "text"}
    assert _exemplars_hint(settings, None).endswith("--corpus hf:NeelNanda/pile-10k --text-column text")
    assert "--corpus" not in _exemplars_hint({**settings, "corpus": "", "text_column": ""}, None)


def test_a_sweep_scans_the_corpus_its_searches_seed_from(tmp_path, monkeypatch):
    from neuron_search.runs import sweep_scheduler

    corpus = tmp_path / "rows.jsonl"
    corpus.write_text(json.dumps({"body": "One line of text that is long enough to be a snippet."}) + "\n")
    asked = []
    monkeypatch.setattr(sweep_scheduler, "subject_model", lambda *_: SimpleNamespace(validate=lambda *a: None))
    monkeypatch.setattr(sweep_scheduler, "seed_corpus_scan", lambda subject, layer, source=None: asked.append(source) or 1)
    settings = {"strategy": "gradient", "corpus": str(corpus), "text_column": "body"}
    assert sweep_scheduler.scan_corpus_first(tmp_path, settings, 1, [0])
    (source,) = asked
    assert source is not None and source.describe() == corpus_source(str(corpus), "body").describe()


def test_a_runs_explanation_is_scored_on_the_corpus_the_search_named(tmp_path, monkeypatch):
    import importlib

    from neuron_search.context import SearchContext

    explain_node = importlib.import_module("neuron_search.nodes.explain")  # the module, not the node function
    corpus = tmp_path / "rows.jsonl"
    corpus.write_text(json.dumps({"body": "One line of text that is long enough to be a snippet."}) + "\n")
    asked = []
    ctx = SearchContext(corpus=str(corpus), text_column="body", results_dir=str(tmp_path))
    monkeypatch.setattr(explain_node, "context_of", lambda runtime: ctx)
    monkeypatch.setattr(explain_node, "services_for", lambda *_: SimpleNamespace(subject=None, proposer=SimpleNamespace(spec="x")))
    monkeypatch.setattr(explain_node, "measurer", lambda *_: None)
    monkeypatch.setattr(explain_node, "real_text_holdout", lambda *a, source=None, **k: asked.append(source))
    monkeypatch.setattr(explain_node, "explain_run", lambda *a, **k: {"explanation": "x"})
    monkeypatch.setattr(explain_node, "llm_calls_of", lambda final: 1)
    explain_node.explain({"run_id": "r", "stats": {"explain_llm_calls": 0}}, None)
    (source,) = asked
    assert source is not None and source.describe() == corpus_source(str(corpus), "body").describe()

"""Dataset examples: the corpus, the scan and its cache, and `run.py exemplars` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuron_search import run
from neuron_search.services.model.bundled import cache_root
from neuron_search.services.dataset.corpus import DEFAULT_MAX_SNIPPETS, MAX_TOKENS, build_snippets, corpus_source, normalise
from neuron_search.services.errors import UserError
from neuron_search.services.dataset.exemplars import exemplars
from neuron_search.services.model.subject_model import SubjectModel

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the quick brown fox jumps over the lazy dog what is the capital of France Paris numbers like 3.14".split()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def subject(tiny_model_dir) -> SubjectModel:
    return SubjectModel.load(str(tiny_model_dir), "cpu")


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def paragraph(seed: int, words: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=words))


def test_the_standard_library_gives_4000_snippets_of_at_most_64_tokens(tokenizer):
    source = corpus_source()
    assert not [f for f in source.files if {"test", "tests", "site-packages"} & set(f.parts)]
    snippets = build_snippets(source, tokenizer)
    assert len(snippets) == DEFAULT_MAX_SNIPPETS >= 4000
    assert len(set(snippets)) == len(snippets)
    lengths = [n_tokens(tokenizer, s) for s in snippets]
    assert min(lengths) >= 1 and max(lengths) <= MAX_TOKENS
    assert all(s == normalise(s) for s in snippets)


def test_a_text_file_is_cut_into_paragraphs_and_snippets(tokenizer, tmp_path):
    long = paragraph(0, 150)
    text = f"First  paragraph,\n  on two lines.\n\n{long}\n \nTwo words\n\nFirst paragraph, on two lines.\n"
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    snippets = build_snippets(corpus_source(tmp_path / "corpus.txt"), tokenizer, max_snippets=0)
    assert snippets[0] == "First paragraph, on two lines."  # normalised; its duplicate dropped
    rest = snippets[1:]
    assert len(rest) >= 3 and all(1 <= n_tokens(tokenizer, s) <= MAX_TOKENS for s in rest)
    assert " ".join(rest) == long  # cut between words: nothing lost, no word split
    assert "Two words" not in snippets  # fewer than MIN_WORDS words


def test_a_folder_reads_text_markdown_and_python(tokenizer, tmp_path):
    (tmp_path / "notes.txt").write_text("Text from a plain file here.", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.md").write_text("# Title\n\nMarkdown paragraph with words.", encoding="utf-8")
    (tmp_path / "code.py").write_text(
        '"""Module docstring of the code."""\n# A comment that spans\n# two lines here.\nx = 1  # an inline comment here\n',
        encoding="utf-8",
    )
    (tmp_path / "broken.py").write_text("def f(:\n    '''Never read at all.'''\n", encoding="utf-8")
    (tmp_path / "data.json").write_text('{"ignored": "json file content"}', encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.txt").write_text("Hidden folder text here.", encoding="utf-8")
    snippets = build_snippets(corpus_source(tmp_path), tokenizer, max_snippets=0)
    assert snippets == [
        "Module docstring of the code.",
        "A comment that spans two lines here.",
        "an inline comment here",
        "Text from a plain file here.",
        "Markdown paragraph with words.",
    ]


def test_a_missing_or_empty_corpus_is_a_clear_error(tokenizer, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        corpus_source(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n  \nok\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no text"):
        build_snippets(corpus_source(tmp_path / "empty.txt"), tokenizer)
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="holds no text"):
        build_snippets(corpus_source(tmp_path / "folder"), tokenizer)


def test_the_cap_spreads_over_the_whole_corpus(tokenizer, tmp_path):
    (tmp_path / "c.txt").write_text("\n\n".join(f"paragraph number {i} here" for i in range(100)), encoding="utf-8")
    snippets = build_snippets(corpus_source(tmp_path / "c.txt"), tokenizer, max_snippets=10)
    assert snippets == [f"paragraph number {i} here" for i in range(0, 100, 10)]


@pytest.fixture
def small_corpus(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "small.txt"
    path.write_text("\n\n".join(paragraph(i, 4 + i % 30) for i in range(60)), encoding="utf-8")
    return path


@pytest.mark.parametrize("neuron", [0, 17, 200])
def test_the_top_k_are_the_highest_by_an_independent_measurement(subject, small_corpus, neuron):
    result = exemplars(subject, 1, neuron, small_corpus, top_k=5, max_snippets=0)
    snippets = build_snippets(corpus_source(small_corpus), subject.tokenizer, max_snippets=0)
    every = sorted(subject.measure(snippets, 1, neuron, batch_size=1), key=lambda m: -m["activation"])
    assert result.scanned == len(snippets)
    assert [r["prompt"] for r in result.records] == [m["prompt"] for m in every[:5]]
    np.testing.assert_allclose([r["activation"] for r in result.records], [m["activation"] for m in every[:5]], atol=1e-5)
    for r in result.records:
        assert r["values"][r["peak"]] == max(r["values"]) == pytest.approx(r["activation"], abs=1e-6)


def test_each_example_is_saved_with_its_cross_entropy_where_a_report_finds_it(subject, small_corpus, tmp_path):
    from neuron_search.services.dataset.exemplars import read_exemplars
    from neuron_search.services.reports.exemplars_page import write_exemplars

    result = exemplars(subject, 1, 17, small_corpus, top_k=4, max_snippets=0)
    path = write_exemplars(result, tmp_path / "results")["json"]
    saved = json.loads(path.read_text())["records"]
    for record in saved:  # each measured on its own, so the batch's padding cannot have changed it
        (alone,) = subject.cross_entropy([subject.token_ids(record["prompt"])])
        assert record["xent"] == pytest.approx(alone, abs=1e-4) and record["xent"] > 0
    found = read_exemplars(tmp_path / "results", subject.name, 1, 17)
    assert found is not None and found["records"] == saved
    assert read_exemplars(tmp_path / "results", subject.name, 1, 18) is None  # another neuron: none saved


def test_the_scan_is_cached_per_layer_and_invalidated_when_the_corpus_changes(subject, small_corpus, monkeypatch):
    calls = []
    scan = subject.layer_maxima
    monkeypatch.setattr(subject, "layer_maxima", lambda *a, **k: calls.append(1) or scan(*a, **k))
    first = exemplars(subject, 1, 3, small_corpus, top_k=3, max_snippets=0)
    assert calls and len(list((cache_root() / "exemplars").glob("*/maxima.npy"))) == 1
    calls.clear()
    again = exemplars(subject, 1, 3, small_corpus, top_k=3, max_snippets=0)
    exemplars(subject, 1, 4, small_corpus, top_k=3, max_snippets=0)
    assert not calls
    assert [r["prompt"] for r in again.records] == [r["prompt"] for r in first.records]
    exemplars(subject, 0, 3, small_corpus, top_k=3, max_snippets=0)  # another layer is another scan
    assert calls
    calls.clear()
    small_corpus.write_text(small_corpus.read_text() + "\n\nA new paragraph about the lazy dog.", encoding="utf-8")
    changed = exemplars(subject, 1, 3, small_corpus, top_k=3, max_snippets=0)
    assert calls and changed.scanned == first.scanned + 1


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANGSMITH_TRACING": "false", "COLUMNS": "160", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "exemplars", *args], env=env, capture_output=True, text=True, timeout=600)


def test_run_py_exemplars_on_the_bundled_model(tmp_path, capsys, monkeypatch):
    # In this process, whose bundled Gemma (loaded once per test process) the command reuses. A fresh scan
    # cache, so that the scan runs, with the bundled model's converted folder linked in so it is not converted
    # again where this process has not loaded it yet.
    cache = tmp_path / "cache"
    cache.mkdir()
    from neuron_search.services.model.bundled import embedded_subject_folder

    (cache / "gemma3-270m").symlink_to(embedded_subject_folder())
    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(cache))
    monkeypatch.setenv("COLUMNS", "160")
    code = run.main(["exemplars", "--model", "embedded", "--layer", "9", "--neuron", "5", "--max-snippets", "64", "--top-k", "7",
                     "--results-dir", str(tmp_path / "results")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    folder = tmp_path / "results" / "exemplars" / "embedded-L9-N5"
    data = json.loads((folder / "exemplars.json").read_text())
    assert (data["model"], data["layer"], data["neuron"], data["snippets_scanned"]) == ("embedded", 9, 5, 64)
    assert "standard library" in data["corpus"] and len(data["records"]) == 7
    activations = [r["activation"] for r in data["records"]]
    assert activations == sorted(activations, reverse=True) and activations[0] > 0
    for r in data["records"]:
        assert len(r["tokens"]) == len(r["values"]) and r["token"] == r["tokens"][r["peak"]]
        assert r["xent"] > 0  # placed beside a run's prompts on its report's Pareto chart
    page = (folder / "exemplars.html").read_text()
    assert page.count('class="tok peak"') == 7 and "<script" not in page
    assert "Top 7 of 64 snippets" in out and str(folder / "exemplars.json") in out.replace("\n", "")


def test_run_py_exemplars_mistakes_end_in_one_paragraph(tmp_path, tiny_model_dir, capsys, monkeypatch):
    # In this process (the command's own code path; four subprocesses cost 20 s of imports).
    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "160")
    (tmp_path / "blank.txt").write_text("\n\n", encoding="utf-8")
    cases = [
        (("--corpus", str(tmp_path / "missing.txt")), "does not exist"),
        (("--model", str(tiny_model_dir), "--layer", "1", "--neuron", "999"), "256 neurons"),
        (("--model", str(tiny_model_dir), "--layer", "7", "--neuron", "1"), "Layer 7 does not exist"),
        (("--model", str(tiny_model_dir), "--layer", "1", "--neuron", "1", "--corpus", str(tmp_path / "blank.txt")), "holds no text"),
    ]
    for args, message in cases:
        code = run.main(["exemplars", *args, "--device", "cpu", "--results-dir", str(tmp_path)])
        out, err = capsys.readouterr()
        assert code == 2, out + err
        assert "Traceback" not in out + err and message in out.replace("\n", " "), out


def test_run_py_exemplars_help_explains_every_option():
    done = run_cli("--help")
    assert done.returncode == 0
    for option in ("--neuron", "--layer", "--model", "--device", "--corpus", "--top-k", "--max-snippets", "--results-dir"):
        assert option in done.stdout, option


def test_a_corpus_cut_again_in_one_process_comes_from_memory_until_a_file_changes(tokenizer, tmp_path, monkeypatch):
    from neuron_search.services.dataset import corpus

    (tmp_path / "c.txt").write_text("one two three four\n\nfive six seven eight\n")
    first = build_snippets(corpus_source(tmp_path / "c.txt"), tokenizer, max_snippets=0)
    monkeypatch.setattr(corpus, "_texts", lambda source: pytest.fail("the corpus was read again"))
    assert build_snippets(corpus_source(tmp_path / "c.txt"), tokenizer, max_snippets=1) == first[:1]
    monkeypatch.undo()
    (tmp_path / "c.txt").write_text("nine ten eleven twelve\n")  # a changed file is read again
    assert build_snippets(corpus_source(tmp_path / "c.txt"), tokenizer, max_snippets=0) == ["nine ten eleven twelve"]

"""results.json, records.csv and report.html from a synthetic run."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest

from services.storage.record_store import StoredRecord
from services.reports.report import MAX_PLOT_POINTS, SOURCE_COLOURS, write_results

WORDS = [" the", " cat", " sat", " on", " mat", " Paris", " is", " capital", " of", " France", ",", ".",
         " quantum", " river", " bank", "\n", " 1984", " def", " return", " café", " über"]
SCRIPT_PROMPT = "<script>alert('x')</script> & friends"

SETTINGS = {
    "model": "gpt2", "layer": 9, "neuron": 840, "llm": "ollama:qwen2.5", "position": "max",
    "batch_size": 8, "temperature": 0.7, "seed": 0, "similarity_threshold": 0.5,
    "seed_prompts": (), "target": None, "run_id": "test-run",
}
STATS = {
    "generated": 420, "accepted": 300, "rejected_similar": 90, "rejected_duplicate": 20,
    "rejected_empty": 10, "measured": 299, "failed": 1, "llm_calls": 40, "llm_errors": 2,
    "llm_empty": 1, "regenerations": 3, "fallback_batches": 2,
}
BUCKETS = {"low": 45, "mid": 209, "high": 45}


def _record(iteration: int, slot: int, source: str, tokens: list[str], rng: random.Random) -> StoredRecord:
    drift = iteration * 0.08
    values = [rng.gauss(0.2, 0.6) + drift * rng.random() for _ in tokens]
    peak = max(range(len(values)), key=values.__getitem__)
    return StoredRecord(iteration=iteration, slot=slot, source=source, prompt="".join(tokens),
                        activation=values[peak], token=tokens[peak], tokens=tokens, values=values, error="")


def synthetic_records(n: int = 300, seed: int = 0) -> list[StoredRecord]:
    """A run shaped like a real one: seeds at iteration 0, then LLM batches of 8 (filled up with
    mutations), some fallbacks."""
    rng = random.Random(seed)
    records: list[StoredRecord] = []
    for i in range(n):
        iteration, slot = (0, i) if i < 12 else ((i - 12) // 8 + 1, (i - 12) % 8)
        source = "seed" if iteration == 0 else ("fallback" if iteration % 9 == 0 else ("mutation" if slot >= 5 else "llm"))
        tokens = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        records.append(_record(iteration, slot, source, tokens, rng))
    # The <script> prompt is made the best so it must appear, escaped, in the top table.
    script_tokens = ["<", "script", ">", "alert", "('", "x", "')", "</", "script", ">", " &", " friends"]
    best = _record(20, 7, "llm", script_tokens, rng)
    best["values"][1] = best["activation"] = max(r["activation"] for r in records) + 1.0
    best["token"] = "script"
    best["prompt"] = SCRIPT_PROMPT
    records[160] = best
    records[40] = StoredRecord(iteration=records[40]["iteration"], slot=records[40]["slot"], source="llm",
                               prompt="a prompt that broke", activation=None, token="", tokens=[], values=[],
                               error="CUDA out of memory")
    return records


@pytest.fixture
def run(tmp_path: Path) -> tuple[dict[str, Path], list[StoredRecord]]:
    records = synthetic_records()
    paths = write_results(tmp_path, SETTINGS, STATS, iter(records), bucket_counts=BUCKETS)
    return paths, records


def test_paths_written(run) -> None:
    paths, _ = run
    assert set(paths) == {"json", "csv", "html"}
    assert all(p.exists() for p in paths.values())


def test_results_json(run) -> None:
    paths, records = run
    data = json.loads(paths["json"].read_text())
    measured = [r["activation"] for r in records if r["activation"] is not None]
    assert data["best"]["activation"] == pytest.approx(max(measured))
    assert data["best"]["prompt"] == SCRIPT_PROMPT
    top = [r["activation"] for r in data["top"]]
    assert len(top) == 20 and top == sorted(top, reverse=True)
    assert top == pytest.approx(sorted(measured, reverse=True)[:20])
    bottom = [r["activation"] for r in data["bottom"]]
    assert len(bottom) == 10 and bottom == pytest.approx(sorted(measured)[:10])
    assert all(isinstance(r["activation"], float) for r in data["top"] + data["bottom"])
    assert set(data["top"][0]) == {"prompt", "activation", "token", "source", "iteration"}
    assert data["statistics"]["accepted_rate"] == pytest.approx(300 / 420)
    assert data["bucket_counts"] == BUCKETS
    assert data["settings"]["neuron"] == 840
    assert data["records"] == {"total": 300, "measured": 299, "failed": 1,
                               "by_source": data["records"]["by_source"]}
    expected = {s: sum(r["source"] == s for r in records) for s in ("seed", "llm", "mutation", "fallback")}
    assert data["records"]["by_source"] == expected and expected["mutation"] > 0


def test_records_csv(run) -> None:
    paths, records = run
    with paths["csv"].open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(records)
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and failed[0]["activation"] == ""
    assert json.loads(rows[0]["values"]) == pytest.approx(records[0]["values"])
    assert any(r["prompt"] == SCRIPT_PROMPT for r in rows)


def _top_rows(page: str) -> list[str]:
    top = page.split("<h2>Top", 1)[1].split("<h2>Bottom", 1)[0]
    return re.findall(r"<tr><td class=\"rank\">.*?</tr>", top, flags=re.S)


def test_report_html(run) -> None:
    paths, records = run
    page = paths["html"].read_text(encoding="utf-8")
    assert "<svg" in page and "</svg>" in page
    assert "&lt;script&gt;" in page
    assert "<script" not in page.lower()
    assert "alert('x')" not in page  # quotes escaped too
    assert "gpt2" in page and "840" in page
    for source in ("seed", "llm", "mutation", "fallback"):  # each in the chart's legend, in its own colour
        assert f'fill="{SOURCE_COLOURS[source]}"/><text class="legend" x="' in page and f">{source}</text>" in page

    top = sorted((r for r in records if r["activation"] is not None), key=lambda r: -r["activation"])[:20]
    rows = _top_rows(page)
    assert len(rows) == 20
    for row, record in zip(rows, top):
        assert len(re.findall(r'<span class="tok(?: peak)?"', row)) == len(record["tokens"])
        assert row.count('class="tok peak"') == 1
    best_row = rows[0]
    peak_span = re.search(r'<span class="tok peak"[^>]*>([^<]*)</span>', best_row)
    assert peak_span and peak_span.group(1) == "script"
    assert 'title="&#x27;script&#x27;: ' in best_row


def test_newlines_and_spaces_visible(run) -> None:
    paths, _ = run
    page = paths["html"].read_text(encoding="utf-8")
    assert "↵" in page
    assert "white-space: pre-wrap" in page


def test_plot_is_downsampled_but_keeps_the_best(tmp_path: Path) -> None:
    rng = random.Random(1)
    n = MAX_PLOT_POINTS * 2 + 500

    def stream():
        for i in range(n):
            value = rng.random() if i != n // 3 else 99.0
            yield StoredRecord(iteration=i // 8, slot=i % 8, source="llm", prompt=f"p{i}", activation=value,
                               token="x", tokens=["x"], values=[value], error="")

    paths = write_results(tmp_path, SETTINGS, STATS, stream())
    page = paths["html"].read_text(encoding="utf-8")
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert svg.count("<circle") <= MAX_PLOT_POINTS + 200
    assert f"of {n:,} measured prompts" in page
    assert json.loads(paths["json"].read_text())["best"]["activation"] == 99.0


def test_no_measured_records(tmp_path: Path) -> None:
    failed = StoredRecord(iteration=0, slot=0, source="seed", prompt="x", activation=None, token="",
                          tokens=[], values=[], error="boom")
    paths = write_results(tmp_path, {"model": "gpt2", "layer": 0, "neuron": 1}, {}, [failed])
    data = json.loads(paths["json"].read_text())
    assert data["best"] is None and data["top"] == []
    assert "No measured prompts" in paths["html"].read_text(encoding="utf-8")

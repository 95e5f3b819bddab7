"""results.json, records.csv and report.html from a synthetic run."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest

from neuron_search.services.reports import record_summary
from neuron_search.services.reports.page_style import SOURCE_COLOURS
from neuron_search.services.reports.record_summary import MAX_PLOT_POINTS, Summary
from neuron_search.services.reports.result_files import write_results
from neuron_search.services.reports.results import write_run_results
from neuron_search.services.storage.record_store import RecordStore, StoredRecord

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
    assert set(data["top"][0]) == {"prompt", "activation", "token", "source", "iteration", "xent",
                                   "variants", "activation_low", "activation_high"}  # one row per theme
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


# ---- activation against cross-entropy, and the dataset baseline ----------------------------------


def fluency_records(n: int, seed: int) -> list[StoredRecord]:
    """A gradient run's records: values rounded to one decimal so that equal activations, equal
    cross-entropies and equal pairs all occur; a few failed prompts and a few without a cross-entropy."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        activation, xent = round(rng.gauss(2.0, 1.5), 1), round(rng.uniform(2.0, 9.0), 1)
        failed, no_xent = rng.random() < 0.03, rng.random() < 0.05
        records.append(StoredRecord(
            iteration=i // 8, slot=i % 8, source=rng.choice(["seed", "gradient", "llm"]), prompt=f"prompt {i}",
            # Its own peak token: "prompt 1" and "prompt 2" would otherwise be near-copies, one theme.
            activation=None if failed else activation, token=f"x{i}", tokens=[f"x{i}"], values=[] if failed else [activation],
            error="boom" if failed else "", xent=None if failed or no_xent else xent,
        ))  # fmt: skip
    return records


def brute_force_front(records: list[StoredRecord]) -> set[tuple[float, float]]:
    points = [(r["activation"], r["xent"]) for r in records if r["activation"] is not None and r["xent"] is not None]
    return {
        (a, x) for a, x in points
        if not any(a2 >= a and x2 <= x and (a2, x2) != (a, x) for a2, x2 in points)
    }  # fmt: skip


def summarise(records: list[StoredRecord]) -> Summary:
    summary = Summary(top_n=5, bottom_n=5)
    for r in records:
        summary.add(r)
    return summary


@pytest.mark.parametrize("seed", range(6))
def test_the_front_is_exactly_the_non_dominated_set(seed):
    records = fluency_records(400 if seed % 2 else 60, seed)
    front = summarise(records).front
    assert {(r["activation"], r["xent"]) for r in front} == brute_force_front(records)
    assert len(front) == len(brute_force_front(records))  # an equal pair is one point, not two
    for r in front:  # ... stood for by the earliest record that has it
        earliest = next(o for o in records if (o["activation"], o["xent"]) == (r["activation"], r["xent"]))
        assert r is earliest
    xents = [r["xent"] for r in front]
    assert xents == sorted(xents)


@pytest.mark.parametrize(
    "pairs, expected",
    [
        ([(2, 5), (2, 4)], {(2, 4)}),  # equal activation, lower cross-entropy: the later one wins
        ([(1, 3), (2, 3)], {(2, 3)}),  # equal cross-entropy, higher activation
        ([(2, 3), (2, 3), (1, 1)], {(2, 3), (1, 1)}),  # an equal pair is one point
        ([(1, 1), (3, 3), (2, 2), (5, 6), (4, 1)], {(4, 1), (5, 6)}),  # one point removes a run of others
    ],
)
def test_the_front_on_ties(pairs, expected):
    records = [
        StoredRecord(iteration=0, slot=i, source="gradient", prompt=f"p{i}", activation=a, token="x", tokens=["x"],
                     values=[a], error="", xent=x)
        for i, (a, x) in enumerate(pairs)
    ]  # fmt: skip
    assert {(r["activation"], r["xent"]) for r in summarise(records).front} == expected == brute_force_front(records)


def test_the_front_and_the_samples_stay_bounded(monkeypatch):
    monkeypatch.setattr(record_summary, "MAX_FRONT", 64)
    monkeypatch.setattr(record_summary, "MAX_PLOT_POINTS", 100)
    summary = Summary(top_n=3, bottom_n=3)
    n, largest = 20_000, 0
    for i in range(n):  # activation and cross-entropy rise together: every prompt joins the front
        value = i / 100
        summary.add(StoredRecord(iteration=i // 8, slot=i % 8, source="gradient", prompt=f"p{i}", activation=value,
                                 token="x", tokens=["x"], values=[value], error="", xent=value))
        largest = max(largest, len(summary.front))
    assert largest <= 64 and summary.front_thinned
    assert summary.front[0]["prompt"] == "p0" and summary.front[-1]["prompt"] == f"p{n - 1}"  # both ends kept
    assert len(summary._xent_sample) <= 100 and len(summary._sample) <= 100
    assert len(summary.xent_points()) <= 164 and summary.with_xent == n


def exemplar_file(results_dir: Path, xents: list[float | None], top: float = 3.0) -> Path:
    from neuron_search.services.dataset.exemplars import Exemplars
    from neuron_search.services.reports.exemplars_page import write_exemplars

    measurements = [
        {"prompt": f"real snippet {i} <b>", "activation": top - i * 0.2, "tokens": ["real", " snippet"],
         "values": [0.1, top - i * 0.2], "peak": 1, "error": "", "xent": xent}
        for i, xent in enumerate(xents)
    ]  # fmt: skip
    result = Exemplars("gpt2", 9, 840, "test corpus", 4000, measurements)
    return write_exemplars(result, results_dir)["json"]


def stored_run(results_dir: Path, records: list[StoredRecord]) -> Path:
    """A run folder as a search leaves it: run.json and records.sqlite."""
    run_dir = results_dir / "test-run"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({**SETTINGS, "low_percentile": 15.0, "high_percentile": 85.0}))
    store = RecordStore(run_dir / "records.sqlite")
    by_iteration: dict[int, list[StoredRecord]] = {}
    for r in records:
        by_iteration.setdefault(r["iteration"], []).append(r)
    for iteration, batch in by_iteration.items():
        measurements = [
            {"prompt": r["prompt"], "activation": r["activation"] or 0.0, "tokens": r["tokens"], "values": r["values"],
             "peak": 0, "error": r["error"], "xent": r.get("xent")}
            for r in batch
        ]  # fmt: skip
        store.append(iteration, [r["source"] for r in batch], measurements, STATS)
    store.close()
    return run_dir


def test_results_json_holds_the_front_the_best_readable_prompt_and_the_dataset(tmp_path):
    records = fluency_records(300, 7)
    run_dir = stored_run(tmp_path, records)
    exemplar_file(tmp_path, [5.0, 3.5, None])
    data = json.loads(write_run_results(run_dir)["json"].read_text())
    front = data["pareto"]
    assert {(p["activation"], p["xent"]) for p in front} == brute_force_front(records)
    assert [p["xent"] for p in front] == sorted(p["xent"] for p in front)
    assert set(front[0]) == {"prompt", "activation", "xent", "source", "iteration"}
    assert data["dataset"] == {"max": 3.0, "prompt": "real snippet 0 <b>", "xent": 5.0, "scanned": 4000,
                               "corpus": "test corpus"}  # fmt: skip
    readable = [r for r in records if r["activation"] is not None and r["xent"] is not None and r["xent"] <= 5.0]
    best = max(readable, key=lambda r: (r["activation"], -r["xent"]))
    assert data["best_readable"]["rule"] == "dataset_xent"
    assert (data["best_readable"]["activation"], data["best_readable"]["xent"]) == (best["activation"], best["xent"])

    (tmp_path / "exemplars").rename(tmp_path / "elsewhere")  # no dataset reference: the balanced rule
    data = json.loads(write_run_results(run_dir)["json"].read_text())
    assert data["dataset"] is None and data["best_readable"]["rule"] == "balanced"
    with_xent = [r for r in records if r["activation"] is not None and r["xent"] is not None]
    lowest = min(r["xent"] - r["activation"] for r in with_xent)
    assert data["best_readable"]["xent"] - data["best_readable"]["activation"] == pytest.approx(lowest)


def test_another_neurons_exemplars_are_not_a_reference(tmp_path):
    run_dir = stored_run(tmp_path, fluency_records(40, 1))
    path = exemplar_file(tmp_path, [5.0])
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "neuron": 841}))  # the right folder, the wrong contents
    data = json.loads(write_run_results(run_dir)["json"].read_text())
    assert data["dataset"] is None


def _headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def _card_labels(page: str) -> list[str]:
    return re.findall(r'<div class="card"><div class="label">(.*?)</div>', page)


def test_the_pareto_chart_draws_the_front_the_dataset_examples_and_the_best_readable_prompt(tmp_path):
    records = fluency_records(300, 3)
    run_dir = stored_run(tmp_path, records)
    exemplar_file(tmp_path, [5.0, 3.5, None, 4.0])
    page = write_run_results(run_dir)["html"].read_text(encoding="utf-8")
    assert _headings(page) == ["Activation over the search", "Activation against cross-entropy", "Top 20 prompts",
                               "Bottom 10 prompts", "Statistics"]  # fmt: skip
    section = page.split('<section id="pareto">', 1)[1].split("</section>", 1)[0]
    assert section.count('class="diamond"') == 3 + 1  # the examples with a cross-entropy, and the legend's
    assert section.count('class="best front"') == 1 and "cross-entropy (nats/token)" in section
    assert section.count('class="ring"') == 2  # the mark and the legend's
    best = json.loads((run_dir / "results.json").read_text())["best_readable"]
    assert f"<pre>{best['prompt']}</pre>" in section and "at or below the dataset max" in section
    # The headline: the dataset max beside the best found, with the ratio and the snippet (escaped).
    assert _card_labels(page)[:2] == ["Best activation", "Dataset max"]
    best_found = max(r["activation"] for r in records if r["activation"] is not None)
    assert f"best found {best_found / 3.0:.2f}× this" in page and "real snippet 0 &lt;b&gt;" in page
    assert "run.py exemplars" not in page


def test_the_pareto_chart_without_a_dataset_reference(tmp_path):
    run_dir = stored_run(tmp_path, fluency_records(100, 4))
    page = write_run_results(run_dir)["html"].read_text(encoding="utf-8")
    section = page.split('<section id="pareto">', 1)[1].split("</section>", 1)[0]
    assert 'class="diamond"' not in section and 'class="threshold"' not in section
    assert "lowest −activation + cross-entropy" in section
    assert "Dataset max" not in page
    assert page.count(f"python run.py exemplars --neuron 840 --layer 9 --model gpt2 --results-dir {tmp_path}") == 1


def test_an_llm_run_report_gains_only_the_dataset_pointer(tmp_path):
    records = synthetic_records()  # no prompt has a cross-entropy
    page = write_results(tmp_path / "run", SETTINGS, STATS, iter(records), bucket_counts=BUCKETS)["html"].read_text()
    assert _headings(page) == ["Activation over the search", "Top 20 prompts", "Bottom 10 prompts", "Statistics"]
    assert _card_labels(page) == ["Best activation", "Prompts measured", "Accepted rate", "LLM calls"]
    assert 'id="pareto"' not in page and 'class="diamond"' not in page
    hints = re.findall(r'<p class="note dataset-hint">.*?</p>', page)
    assert len(hints) == 1 and "python run.py exemplars --neuron 840 --layer 9 --model gpt2" in hints[0]
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["pareto"] == [] and data["best_readable"] is None and data["dataset"] is None

    # With the neuron's examples saved: the dataset max shows, still no chart without cross-entropies.
    run_dir = stored_run(tmp_path / "saved", records)
    exemplar_file(tmp_path / "saved", [5.0])
    page = write_run_results(run_dir)["html"].read_text()
    assert 'id="pareto"' not in page and 'class="note dataset-hint"' not in page
    assert _card_labels(page)[:2] == ["Best activation", "Dataset max"]


def test_the_report_tables_show_one_row_per_finding_in_its_shortest_form(tmp_path):
    def stored(slot: int, tokens: list[str], values: list[float]) -> StoredRecord:
        peak = values.index(max(values))
        return StoredRecord(iteration=1, slot=slot, source="llm", prompt="".join(tokens), activation=max(values),
                            token=tokens[peak], tokens=tokens, values=values, error="", xent=None, peak=peak)  # fmt: skip

    finding = (["The", " fox", " jumps"], [0.1, 0.9, 0.2])
    records = [
        stored(0, finding[0] + [" over", " it"], finding[1] + [0.3, 0.1]),
        stored(1, *finding),
        stored(2, finding[0] + [" high"], finding[1] + [0.4]),
        stored(3, ["A", " dog"], [0.2, 0.5]),
    ]
    paths = write_results(tmp_path, SETTINGS, STATS, iter(records))
    data = json.loads(paths["json"].read_text())
    assert [r["prompt"] for r in data["top"]] == ["The fox jumps", "A dog"]
    assert "2 other prompts are folded" in paths["html"].read_text()

"""One prompt per theme: near-copies (a word dropped or doubled before the peak) fold into one theme with
its count and activation range; distinct prompts do not; a run's top 10 is ten themes where ten exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuron_search.runs.search import SearchResult
from neuron_search.services.reports.display import records_table
from neuron_search.services.reports.record_summary import Summary
from neuron_search.services.reports.result_files import write_results
from neuron_search.services.search.findings import distinct_findings, ranked_themes
from neuron_search.services.search.themes import THRESHOLD, group_themes, near_copies, similarity
from neuron_search.services.storage.record_store import RecordStore, StoredRecord
from neuron_search.state import Measurement, Record

# Ten different sentences that all peak on " (" (the neuron 840 fires on an opening parenthesis).
BASES = [
    "Return a file descriptor for the given path on this machine (",
    "The plist module reads and writes property list files used by Apple (",
    "Open the socket and bind it to the address given by the caller (",
    "In the summer of that year the river flooded the lower town (",
    "She bought three apples and a loaf of bread at the market (",
    "The committee will meet again next week to discuss the budget (",
    "Compute the mean and the variance of the samples in one pass (",
    "Our hotel is a short walk from the station and the old harbour (",
    "The patient was given a low dose of the drug twice a day (",
    "Parse the command line and print a usage message on error (",
]


def words(text: str) -> list[str]:
    """`text` as tokens: words with the space before them, and the final " (" as its own token."""
    body = text[: -len(" (")].split(" ")
    return [body[0]] + [" " + w for w in body[1:]] + [" ("]


def variant(tokens: list[str], j: int) -> list[str]:
    """A near-copy: word j (before the peak) dropped when j is even, doubled when it is odd."""
    return tokens[:j] + tokens[j + 1 :] if j % 2 == 0 else tokens[: j + 1] + tokens[j:]


def stored(tokens: list[str], activation: float, slot: int = 0, tail: list[str] | None = None) -> StoredRecord:
    peak = len(tokens) - 1
    every = tokens + (tail or [])
    values = [0.1] * len(every)
    values[peak] = activation
    return StoredRecord(iteration=1, slot=slot, source="gradient", prompt="".join(every), activation=activation,
                        token=tokens[peak], tokens=every, values=values, error="", xent=None, peak=peak)  # fmt: skip


def table_record(text: str, activation: float) -> Record:
    """A record as the tables keep it: its text through the peak, no tokens."""
    return Record(prompt=text + " Unix) or handle", activation=activation, token=" (", source="llm", iteration=0,
                  finding=text)  # fmt: skip


def test_a_word_dropped_or_doubled_before_the_peak_folds_into_one_theme_with_its_count_and_range():
    base = words(BASES[0])
    records = [
        stored(base, 2.0),
        stored(variant(base, 3), 1.9),  # doubled
        stored(words(BASES[1]), 1.7),  # another sentence on the same peak token
        stored(variant(base, 4), 1.6),  # dropped
        stored(variant(variant(base, 6), 2), 1.5),  # two words dropped
    ]
    themes = group_themes(records)
    assert [(t["best"]["prompt"], t["variants"], t["low"], t["high"]) for t in themes] == [
        (BASES[0], 4, 1.5, 2.0),
        (BASES[1], 1, 1.7, 1.7),
    ]
    assert records[1]["prompt"] != records[0]["prompt"]  # they were near-copies, not copies
    assert all(near_copies(records[0], r) for r in (records[1], records[3], records[4]))


def test_table_records_without_tokens_fold_the_same_way_on_their_characters():
    base = BASES[0][: -len(" (")].split(" ")
    drop, double = " ".join(base[:3] + base[4:]) + " (", " ".join(base[:5] + base[4:]) + " ("
    records = [table_record(BASES[0], 2.0), table_record(drop, 1.2), table_record(BASES[3], 1.1), table_record(double, 0.9)]
    themes = group_themes(records)
    assert [(t["best"]["finding"], t["variants"], t["low"], t["high"]) for t in themes] == [
        (BASES[0], 3, 0.9, 2.0),
        (BASES[3], 1, 1.1, 1.1),
    ]


HAND_WRITTEN = {  # distinct prompts through a shared peak token: none is a near-copy of another
    " not": ["The file you asked for does not", "She said she would rather not", "Whether or not", "This method is not",
             "Warnings may occur because the module does not", "I really do not", "Please do not", "It is not"],
    " None": ["If the key is missing, the function returns None", "Set the default value to None",
              "Return the matching row, or None", "The result was None", "x = None", "if value is None"],
    " by": ["The book was written by", "Raised by", "The song was performed by", "Divide the total by",
            "The house was built by"],
}


@pytest.mark.parametrize("token", list(HAND_WRITTEN))
def test_distinct_prompts_on_one_peak_token_stay_apart(token):
    records = [Record(prompt=t, activation=1.0 - i / 100, token=token, source="llm", iteration=0, finding=t)
               for i, t in enumerate(HAND_WRITTEN[token])]  # fmt: skip
    assert len(group_themes(records)) == len(records)
    assert max(similarity(a, b) for a in records for b in records if a is not b) < THRESHOLD


def test_the_same_text_peaking_on_another_token_is_another_theme():
    base = words(BASES[2])
    earlier = base[:-1]  # the same sentence, peaking one token sooner
    assert len(group_themes([stored(base, 2.0), stored(earlier, 1.5)])) == 2


def fill_store(path: Path) -> RecordStore:
    """Ten themes of six near-copies each, the first theme's six above every other prompt, so that the
    ten best prompts are one theme; each prompt also once with words after its peak (the same finding)."""
    store = RecordStore(path)
    batch: list[Measurement] = []
    for t, text in enumerate(BASES):
        base = words(text)
        forms = [base] + [variant(base, j) for j in range(1, 6)]
        for j, tokens in enumerate(forms):
            activation = round((10.0 if t == 0 else 5.0 - t / 10) - j / 100, 4)
            for tail in (None, [" Unix", ")"]):
                record = stored(tokens, activation, tail=tail)
                batch.append(Measurement(prompt=record["prompt"], activation=activation, tokens=record["tokens"],
                                         values=record["values"], peak=record["peak"], error="", xent=None))  # fmt: skip
    store.append(1, ["gradient"] * len(batch), batch)
    return store


def test_a_runs_top_10_is_ten_themes_in_the_tables_results_json_and_result_top(tmp_path):
    store = fill_store(tmp_path / "run" / "records.sqlite")
    records = list(store)
    # Without themes (findings alone) the top 10 is the first sentence in its six costumes and another's four.
    ranked = sorted(records, key=lambda r: -r["activation"])
    assert len(group_themes(distinct_findings(ranked)[:10])) == 2

    summary = Summary(top_n=10, bottom_n=10)
    for record in records:
        summary.add(record)
    expected = [(text, 6, round((10.0 if t == 0 else 5.0 - t / 10) - 0.05, 4), 10.0 if t == 0 else 5.0 - t / 10)
                for t, text in enumerate(BASES)]  # fmt: skip
    rows = [(r["prompt"], r["variants"], r["activation_low"], r["activation_high"]) for r in summary.top]
    assert rows == pytest.approx(expected)
    assert summary.folded[0] == 10 * 12 - 10  # every other prompt is folded into a row
    lowest = [(6, 4.05, 4.1), (6, 4.15, 4.2)]  # the two lowest themes, lowest first
    assert [(r["variants"], r["activation_low"], r["activation_high"]) for r in summary.bottom[:2]] == pytest.approx(lowest)

    paths = write_results(tmp_path / "out", {"model": "m", "layer": 0, "neuron": 1}, {}, iter(records), top_n=10)
    data = json.loads(paths["json"].read_text())
    assert [(r["prompt"], r["variants"], r["activation_low"], r["activation_high"]) for r in data["top"]] == pytest.approx(expected)
    page = paths["html"].read_text()
    assert "<th class=\"num\">Variants</th>" in page and "110 other prompts are folded" in page

    result = SearchResult(tmp_path / "run", {"top": [], "bottom": []}, None)  # type: ignore[arg-type]
    top = result.top(10)
    assert [(r["prompt"], r["variants"], r["activation_low"], r["activation_high"]) for r in top] == pytest.approx(expected)
    assert [t["variants"] for t in result.themes(3)] == [6, 6, 6]
    assert [(r["variants"], r["activation_low"], r["activation_high"]) for r in result.bottom(2)] == pytest.approx(lowest)
    assert ranked_themes(store, 10)[0]["best"]["finding"] == BASES[0]  # a table record, its shortest form

    table = records_table(top, "Top 10 prompts")
    assert [c.header for c in table.columns][:4] == ["#", "activation", "variants", "range"]
    store.close()


def test_real_snippets_without_a_token_key_are_grouped_on_their_tokens_at_the_peak():
    """A scan's `Measurement`s carry tokens and a peak but no `token`: two windows of one passage fold."""
    passage = words("If mode is P_NOWAIT return the pid of the process and if mode is P_WAIT (")

    def snippet(tokens: list[str], activation: float) -> dict:
        return {"prompt": "".join(tokens), "activation": activation, "tokens": tokens, "values": [activation] * len(tokens),
                "peak": len(tokens) - 1, "error": "", "xent": None}  # fmt: skip

    snippets = [snippet(passage, 3.0), snippet(passage[1:], 2.9), snippet(words(BASES[4]), 2.0)]
    assert [t["variants"] for t in group_themes(snippets)] == [2, 1]


def test_the_neurons_dataset_examples_show_one_snippet_per_theme(tmp_path):
    """`run.py exemplars`' table and exemplars.html fold two windows of one passage into one row with its
    count; exemplars.json keeps every snippet (the dataset max and the evidence read it)."""
    from rich.console import Console

    from neuron_search.services.dataset.exemplars import Exemplars
    from neuron_search.services.reports.display import exemplars_table
    from neuron_search.services.reports.exemplars_page import write_exemplars

    passage = words("If mode is P_NOWAIT return the pid of the process and if mode is P_WAIT (")
    other = words(BASES[4])

    def snippet(tokens: list[str], activation: float) -> dict:
        return {"prompt": "".join(tokens), "activation": activation, "tokens": tokens, "values": [activation] * len(tokens),
                "peak": len(tokens) - 1, "token": tokens[-1], "error": "", "xent": None}  # fmt: skip

    records = [snippet(passage, 3.0), snippet(passage[1:], 2.9), snippet(other, 2.0)]
    console = Console(record=True, width=200)
    console.print(exemplars_table(records, "Top 3 of 9 snippets"))
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in console.export_text().splitlines() if line.startswith("│")]
    assert [(row[0], row[2]) for row in rows] == [("1", "2"), ("2", "1")]  # rank, variants
    result = Exemplars(model="m", layer=1, neuron=3, corpus="c", scanned=9, records=records)
    paths = write_exemplars(result, tmp_path)
    page = paths["html"].read_text()
    assert "Top 3 snippets, in 2 themes" in page and page.count('<td class="rank">') == 2
    assert len(json.loads(paths["json"].read_text())["records"]) == 3

"""Bucket counts: one rule (services/search/buckets.py) for the filter and the reports; every value in exactly one bucket."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from neuron_search.testing.helpers import scripted, tiny_settings
from neuron_search.api import NeuronSearch
from neuron_search.services.search.buckets import bucket_counts
from neuron_search.services.reports.results import write_run_results


def counts(values: list[float]) -> dict[str, int]:
    return bucket_counts(np.asarray(values, dtype=np.float64), 15.0, 85.0)


def test_a_normal_spread_puts_the_tails_in_low_and_high():
    assert counts(list(range(100))) == {"low": 15, "mid": 70, "high": 15}


def test_equal_activations_are_all_high_never_counted_twice():
    # The percentiles coincide: each value is at or below the low cut and at or above the high one.
    assert counts([0.5] * 10) == {"low": 0, "mid": 0, "high": 10}
    assert counts([1.0] * 18 + [0.0, 2.0]) == {"low": 1, "mid": 0, "high": 19}


@pytest.mark.parametrize(("values", "expected"), [([], {"low": 0, "mid": 0, "high": 0}), ([3.0], {"low": 0, "mid": 1, "high": 0})])
def test_fewer_than_two_activations_are_mid(values, expected):
    assert counts(values) == expected


def test_results_json_of_a_run_whose_activations_are_all_equal(tiny_model_dir, tmp_path):
    NeuronSearch(**tiny_settings(
        tiny_model_dir, llm=scripted(["unused"]), strategy="llm",
        results_dir=str(tmp_path), run_id="flat", builtin_seeds=False, seed_prompts=("One seed.", "Another seed.", "A third seed."), iterations=0,
    )).run(progress=False)  # fmt: skip
    run_dir = tmp_path / "flat"
    with sqlite3.connect(run_dir / "records.sqlite") as db:
        db.execute("UPDATE records SET activation = 0.25 WHERE activation IS NOT NULL")
        measured = db.execute("SELECT COUNT(*) FROM records WHERE activation IS NOT NULL").fetchone()[0]
    db.close()
    write_run_results(run_dir)
    buckets = json.loads((run_dir / "results.json").read_text())["bucket_counts"]
    assert measured == 3
    assert buckets["mid"] >= 0 and sum(buckets.values()) == measured

"""The plain GCG peer of bench/gradient_quality.py (bench/gcg_peers.py) on the tiny GPT-2: it measures
exactly its budget, every number it reports is `SubjectModel.measure`'s, and the readable point the
bench reads from a peer's records is the one a full computation gives. nanoGCG is not installed by
the dev extra, so its peer is not tested here."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch


from gcg_peers import NEUTRAL_START, Evaluator, PeerRun, disallowed_ids, plain_gcg  # noqa: E402
from gradient_quality import best_at, fill_xent  # noqa: E402

from neuron_search.services.search.candidates import allowed_tokens  # noqa: E402
from neuron_search.services.model.subject_model import SubjectModel  # noqa: E402

LAYER, NEURON = 1, 7


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> SubjectModel:
    return SubjectModel.load(str(tiny_model_dir), "cpu")


@pytest.fixture(scope="module")
def run(tiny) -> PeerRun:
    return plain_gcg(tiny, LAYER, NEURON, NEUTRAL_START, budget=45, width=8, top_k=16, seed=0)


def test_plain_gcg_measures_exactly_its_budget_of_distinct_prompts(run) -> None:
    assert run.stop == "budget"
    assert len(run.records) == 45
    assert len({r["prompt"] for r in run.records}) == 45
    assert run.records[0]["prompt"] == NEUTRAL_START and run.records[0]["step"] == 0
    assert run.steps >= 45 // 8  # a step measures at most its 8 candidates
    assert run.proposed == 1 + run.steps * 8 - run.filtered


def test_every_number_is_what_measure_gives(tiny, run) -> None:
    again = tiny.measure([r["prompt"] for r in run.records], LAYER, NEURON, "max")
    for record, measured in zip(run.records, again):
        assert record["activation"] == pytest.approx(measured["activation"], abs=1e-6)
    prompt, best = run.best
    (alone,) = tiny.measure([prompt], LAYER, NEURON, "max")
    assert best == pytest.approx(alone["activation"], abs=1e-6)
    assert best >= run.records[0]["activation"]


def test_candidates_hold_only_the_tools_allowed_tokens(tiny, run) -> None:
    allowed = allowed_tokens(tiny, ascii_only=True)
    start = set(tiny.token_ids(NEUTRAL_START))
    for record in run.records[1:]:
        ids = tiny.token_ids(record["prompt"])
        assert all(allowed[i] or i in start for i in ids)
    assert not allowed[disallowed_ids(tiny)].any()


def test_the_budget_stops_a_batch_midway(tiny) -> None:
    peer = PeerRun("test")
    evaluator = Evaluator(tiny, LAYER, NEURON, 3, peer)
    values = evaluator.score(["a b", "a b", "c d", "e f", "g h"])
    assert [v is None for v in values] == [False, False, False, False, True]
    assert len(peer.records) == 3 and peer.proposed == 5
    assert evaluator.score(["c d"])[0] == values[2]  # known: neither measured nor counted again
    assert len(peer.records) == 3 and evaluator.left == 0


@pytest.fixture(scope="module")
def full(tiny, run) -> list[dict]:
    """Copies of the run's records, each with its cross-entropy: what fill_xent must agree with."""
    full = [dict(r) for r in run.records]
    for r, xent in zip(full, tiny.cross_entropy([tiny.token_ids(r["prompt"]) for r in full])):
        r["xent"] = xent
    return full


def test_fill_xent_gives_the_readable_point_of_a_full_computation(tiny, run, full) -> None:
    records = [dict(r) for r in run.records]
    xents = sorted(r["xent"] for r in full)
    for limit in (xents[0], xents[len(xents) // 2], xents[-1], xents[0] - 1.0):
        part = [dict(r) for r in records]
        fill_xent(tiny, part, [20, 45], limit, batch=4)
        for budget in (20, 45):
            got, want = best_at(part, budget, limit), best_at(full, budget, limit)
            if math.isnan(want[0]):
                assert math.isnan(got[0])
            else:
                assert got[0] == want[0] and got[1] == pytest.approx(want[1], abs=1e-5)
            assert best_at(part, budget)[1] == pytest.approx(best_at(full, budget)[1], abs=1e-5)


def test_fill_xent_to_an_infinite_limit_computes_only_each_budgets_best(tiny, run, full) -> None:
    """--no-peer-readable's limit: the best's cross-entropy at each budget, nothing more."""
    below_all = min(r["xent"] for r in full) - 1.0  # nothing readable: the full search computes every one
    part = [dict(r) for r in run.records]
    assert fill_xent(tiny, part, [20, 45], math.inf, batch=4) <= 2
    assert sum(r["xent"] is not None for r in part) <= 2
    for budget in (20, 45):
        assert best_at(part, budget)[1] == pytest.approx(best_at(full, budget)[1], abs=1e-5)
    assert fill_xent(tiny, [dict(r) for r in run.records], [20, 45], below_all, batch=4) == len(run.records)


def test_the_same_seed_gives_the_same_run(tiny) -> None:
    a = plain_gcg(tiny, LAYER, NEURON, NEUTRAL_START, budget=20, width=8, top_k=16, seed=3)
    b = plain_gcg(tiny, LAYER, NEURON, NEUTRAL_START, budget=20, width=8, top_k=16, seed=3)
    assert [r["prompt"] for r in a.records] == [r["prompt"] for r in b.records]
    assert torch.equal(torch.tensor([r["activation"] for r in a.records]), torch.tensor([r["activation"] for r in b.records]))

"""The graph's state: small, typed, JSON-serialisable and bounded.

A checkpoint of this state is written after every node, so nothing here grows with the number
of prompts tried: the full history lives in the run's record store (services/storage/record_store.py).
"""

from __future__ import annotations

from typing import Literal

from typing_extensions import NotRequired, TypedDict  # pydantic (Studio's schemas) needs it on Python < 3.12

Source = Literal["seed", "llm", "mutation", "fallback", "gradient"]
Route = Literal["continue", "stalled", "done"]


class Candidate(TypedDict):
    """A proposed prompt and who made it (a mutation fills an LLM batch that came back short)."""

    prompt: str
    source: Source
    # A child of the gradient search's lead: its cross-entropy is measured only if it beats the lead.
    lead: NotRequired[bool]


class Measurement(TypedDict):
    """One measured prompt of the current batch, with its per-token activations."""

    prompt: str
    activation: float  # the neuron's activation reduced over positions (max or last)
    tokens: list[str]  # the prompt's tokens, BOS and padding excluded
    values: list[float]  # the neuron's activation at each of those tokens
    peak: int  # index into tokens of the measured value: the highest (position max) or the last (last)
    error: str  # "" when measured, else why the prompt could not be measured
    xent: float | None  # the prompt's cross-entropy under the subject model (its fluency), when measured


class Record(TypedDict):
    """A measured prompt as kept in the top-k / bottom-k tables."""

    prompt: str
    activation: float
    token: str  # the peak token: where the measured value was read (see Measurement.peak)
    source: Source
    iteration: int
    finding: NotRequired[str]  # its text through the peak token: one finding (services/search/findings.py)
    # Where it stands for a theme of near-copies (services/search/themes.py: result.top(), the tables):
    variants: NotRequired[int]  # how many findings the theme holds, itself included
    activation_low: NotRequired[float]  # the lowest and highest activation among them
    activation_high: NotRequired[float]


class Member(TypedDict):
    """One slot of the gradient search's population (services/search/population.py)."""

    prompt: str
    ids: list[int]  # its tokens, BOS excluded: what the gradient is taken over
    activation: float
    peak: int  # index into ids of the measured value
    xent: float | None  # cross-entropy under the subject model (lower reads more like real text); None: not measured


class Stats(TypedDict):
    """Counters over the whole run."""

    generated: int  # candidate prompts proposed (LLM, mutations, fallback and seeds)
    accepted: int  # candidates that passed the semantic filter
    rejected_similar: int  # rejected as near-copies of mid-bucket prompts
    rejected_duplicate: int  # rejected as exact duplicates
    rejected_empty: int  # empty, or nothing left after tokenizing
    measured: int  # prompts whose activation was measured
    failed: int  # prompts the subject model could not measure
    llm_calls: int
    llm_errors: int  # LLM calls that raised or timed out
    llm_empty: int  # LLM answers from which no prompt could be parsed
    mutations: int  # mutations of the top prompts that filled LLM batches which came back short
    regenerations: int  # LLM batches asked again because all were rejected
    fallback_batches: int  # batches made by the random fallback
    gradient_batches: int  # batches of token swaps proposed by the gradient
    lead_moves: int  # times the lead moved to a child that did not beat it (--lead-patience)
    explain_llm_calls: int  # LLM calls spent explaining the neuron and scoring explanations


class SearchState(TypedDict, total=False):
    run_id: str
    iteration: int  # completed generate→measure rounds; seeds are iteration 0
    source: Source  # which node made the current batch: seed, llm (with its mutations), gradient or fallback
    candidates: list[Candidate]  # the current batch, before the filter
    accepted: list[Candidate]  # the current batch, after the filter
    measured: list[Measurement]  # the current batch, measured: one per accepted candidate, in order
    rejected_similar: list[str]  # the latest near-copies, shown to the LLM (bounded)
    top: list[Record]  # the top-k records, highest first
    bottom: list[Record]  # the bottom-k records, lowest first
    population: list[Member]  # the gradient search's slots, one per fluency weight (empty for --strategy llm)
    lead_parent: Member | None  # the lead whose children the latest gradient batch holds
    lead_stall: int  # gradient batches in a row in which no child beat the lead (--lead-patience, --lead-distance-stall)
    best: Record | None
    hypothesis: str  # the latest --explain-every explanation and its score, shown to the LLM ("" before one)
    explanation: str  # the run's final explanation (explanation.json holds its scores)
    stats: Stats
    attempts: int  # consecutive LLM batches rejected whole
    since_improvement: int  # prompts measured since the best last rose by min_improvement
    batch_started: float  # UNIX time the current batch started
    elapsed: float  # seconds of search so far, across resumes
    route: Route
    stop_reason: str


def empty_stats() -> Stats:
    return Stats(
        generated=0,
        accepted=0,
        rejected_similar=0,
        rejected_duplicate=0,
        rejected_empty=0,
        measured=0,
        failed=0,
        llm_calls=0,
        llm_errors=0,
        llm_empty=0,
        mutations=0,
        regenerations=0,
        fallback_batches=0,
        gradient_batches=0,
        lead_moves=0,
        explain_llm_calls=0,
    )


def bump(stats: Stats, **increments: int) -> Stats:
    """A copy of stats with the given counters increased (a counter a run saved before it existed starts at 0)."""
    new = {**empty_stats(), **stats}
    for key, value in increments.items():
        new[key] += value
    return Stats(**new)

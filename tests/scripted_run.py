"""`python run.py` with a scripted proposer: a whole search in a subprocess that tests can signal.

    python tests/scripted_run.py --model TINY_DIR --layer 1 --neuron 3 --device cpu --llm custom:scripted ...

A chat model can only be registered inside the process that uses it, so this script registers one
as `custom:scripted` and then hands its arguments to `run.main`, exactly as `python run.py` would.
A batch then takes well under a second on the tiny GPT-2, where the embedded LLM would take minutes.
The helpers below start it and watch its record store from a test.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from neuron_search import run  # noqa: E402 (first, so that .env is loaded before LangChain, as in `python run.py`)
from neuron_search.testing.helpers import fresh_answers  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402

from neuron_search.services.llm.proposer import register_chat_model  # noqa: E402

NAME = "scripted"


def register_scripted() -> str:
    """The proposer of every scripted run; a new process starts its answers from the first again."""
    return register_chat_model(FakeListChatModel(responses=fresh_answers(300)), name=NAME)


def start(*args: str) -> subprocess.Popen:
    """This script in a subprocess, offline, its output captured."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANGSMITH_TRACING": "false", "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, __file__, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def tiny_args(model_dir: Path, results_dir: Path, run_id: str, *more: str) -> list[str]:
    """A run on the tiny GPT-2 that measures every fresh prompt (near-copies are allowed) and goes
    to the random fallback after one rejected regeneration."""
    return [
        "--model", str(model_dir), "--layer", "1", "--neuron", "3", "--device", "cpu",
        "--llm", f"custom:{NAME}", "--strategy", "llm", "--batch-size", "4", "--similarity-threshold", "0.99", "--max-attempts", "1",
        "--results-dir", str(results_dir), "--run-id", run_id, "--quiet", *more,
    ]  # fmt: skip


def stored_rows(store: Path) -> list[tuple]:
    """Every row of a record store, in key order; [] while it does not exist yet."""
    if not store.is_file():
        return []
    db = sqlite3.connect(store)
    try:
        return db.execute("SELECT * FROM records ORDER BY iteration, slot").fetchall()
    except sqlite3.OperationalError:  # the table is not created yet
        return []
    finally:
        db.close()


def wait_for_iteration(store: Path, iteration: int, process: subprocess.Popen, timeout: float = 180.0) -> list[tuple]:
    """Poll the store until it holds a batch of `iteration`; returns its rows then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = stored_rows(store)
        if rows and max(r[0] for r in rows) >= iteration:
            return rows
        if process.poll() is not None:
            raise AssertionError(f"The scripted run ended early:\n{process.stdout.read()}{process.stderr.read()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"The scripted run did not reach iteration {iteration} in {timeout:.0f} s")


if __name__ == "__main__":
    register_scripted()
    sys.exit(run.main(sys.argv[1:]))

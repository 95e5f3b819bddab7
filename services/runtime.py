"""The services a run needs, loaded once per process and cached.

Models are cached by what identifies them (name, device), so a second run in the same process
(a notebook, Studio's server) reuses them; the record store and the semantic index belong to
one run folder and are rebuilt from the store when a run is resumed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from langgraph.runtime import Runtime

from context import SearchContext, as_context
from services.search.prompt_index import PromptIndex, load_embedder
from services.llm.proposer import Proposer
from services.storage.files import inside
from services.storage.record_store import RecordStore
from services.sweep.shared_tops import SharedTops
from services.model.subject_model import SubjectModel


def context_of(runtime: Runtime[SearchContext] | None) -> SearchContext:
    """The run's context; Studio passes none when the form is left empty."""
    return as_context(getattr(runtime, "context", None))


@dataclass
class Services:
    subject: SubjectModel
    index: PromptIndex
    store: RecordStore
    proposer: Proposer
    opened_at: float  # when this process opened the run: a resumed run's clock starts here


def run_dir(ctx: SearchContext, run_id: str) -> Path:
    """The run's folder in ctx.results_dir; a run id that is not a plain name is a UserError."""
    return inside(ctx.results_dir, run_id)


@cache
def subject_model(name: str, device: str) -> SubjectModel:
    return SubjectModel.load(name, device)


@cache
def shared_tops(path: str) -> SharedTops:
    """A sweep's shared table, opened once per process."""
    return SharedTops(path)


# One entry per open run folder: its semantic index, record store, proposer and opening time.
_runs: dict[Path, tuple[PromptIndex, RecordStore, Proposer, float]] = {}


def _open_run(
    folder: Path, ctx: SearchContext, subject_device: str
) -> tuple[PromptIndex, RecordStore, Proposer, float]:
    if folder not in _runs:
        store = RecordStore(folder / "records.sqlite")
        # The embedder loads on the index's first embedding, which at threshold 1.0 never comes.
        index = PromptIndex(lambda prompts: load_embedder(ctx.embedder, subject_device)(prompts), lazy=True)
        measured = store.measured_prompts()
        index.add([prompt for prompt, _ in measured], [activation for _, activation in measured])
        _runs[folder] = (index, store, Proposer(ctx.llm, ctx.temperature), time.time())
    return _runs[folder]


# Searches running at once in one process (threads, Studio's server) load each model and open each
# run once: the first caller loads, the others wait for it.
_loading = threading.Lock()


def services_for(ctx: SearchContext, run_id: str) -> Services:
    """The run's services; the first call loads the models and checks layer and neuron."""
    with _loading:
        subject = subject_model(ctx.model, ctx.device)
        subject.validate(ctx.layer, ctx.neuron)
        index, store, proposer, opened_at = _open_run(run_dir(ctx, run_id).resolve(), ctx, subject.device)
    return Services(subject=subject, index=index, store=store, proposer=proposer, opened_at=opened_at)


def release_run(ctx: SearchContext, run_id: str) -> None:
    """Close the run's record store and forget its index; the models stay cached."""
    with _loading:
        entry = _runs.pop(run_dir(ctx, run_id).resolve(), None)
    if entry is not None:
        entry[1].close()

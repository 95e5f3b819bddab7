"""The services a run needs, loaded once per process and cached.

Models are cached by what identifies them (name, device), so a second run in the same process
(a notebook, Studio's server) reuses them; the record store and the semantic index belong to
one run folder and are rebuilt from the store when a run is resumed.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from langgraph.runtime import Runtime

from neuron_search.context import SearchContext, as_context
from neuron_search.services.errors import UserError
from neuron_search.services.llm.proposer import Proposer
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.search.prompt_index import PromptIndex, load_embedder
from neuron_search.services.storage.record_store import RecordStore
from neuron_search.services.storage.run_folder import run_dir
from neuron_search.services.storage.shared_tops import SharedTops


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


MAX_THREADS = 1024  # context.LIMITS['threads']

# torch's own thread count in this process before any run set one: what --threads 0 means.
_torch_default_threads: int | None = None


def cpu_count() -> int:
    """Cores this process may use (the container's or the affinity mask's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int) -> None:
    """A UserError unless `threads` is a thread count --threads takes."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
        raise UserError(
            f"--threads takes a whole number from 0 (torch's default: all cores) to {MAX_THREADS}, not {threads!r}; "
            "with several searches on one machine, give each cores / searches."
        )


def use_threads(threads: int) -> int:
    """Make torch (and the embedded LLM, when it loads after this) use `threads` threads in this
    process; 0 keeps torch's default (all cores, or OMP_NUM_THREADS where set, as in a 1-CPU Ray
    actor). Returns the count torch uses now. Processes that share a machine (two searches side by
    side, a sweep's workers) each take cores / processes, else their threads fight over the cores."""
    global _torch_default_threads
    import torch

    from neuron_search.services.llm import embedded_llm

    check_threads(threads)
    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    wanted = threads or _torch_default_threads
    if torch.get_num_threads() != wanted:  # a run's nodes each call services_for: set once, not per node
        torch.set_num_threads(wanted)
    # llama.cpp ignores OMP_NUM_THREADS (Ray sets it to a 1-CPU actor's 1): it takes torch's count then too.
    embedded_llm.set_threads(threads or (wanted if os.environ.get("OMP_NUM_THREADS") else 0))
    return torch.get_num_threads()


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


def checked_subject(ctx: SearchContext) -> SubjectModel:
    """The run's subject model, loaded once per process (a second search that asks while it loads waits
    for it), with the run's layer and neuron checked against it."""
    with _loading:
        return _checked_subject(ctx)


def _checked_subject(ctx: SearchContext) -> SubjectModel:
    use_threads(ctx.threads)  # before the model measures anything
    subject = subject_model(ctx.model, ctx.device)
    subject.validate(ctx.layer, ctx.neuron)
    return subject


def services_for(ctx: SearchContext, run_id: str) -> Services:
    """The run's services; the first call loads the models and checks layer and neuron."""
    with _loading:
        subject = _checked_subject(ctx)
        index, store, proposer, opened_at = _open_run(run_dir(ctx, run_id).resolve(), ctx, subject.device)
    return Services(subject=subject, index=index, store=store, proposer=proposer, opened_at=opened_at)


def release_run(ctx: SearchContext, run_id: str) -> None:
    """Close the run's record store and forget its index; the models stay cached."""
    with _loading:
        entry = _runs.pop(run_dir(ctx, run_id).resolve(), None)
    if entry is not None:
        entry[1].close()

"""One neuron of a sweep, run where a worker is: in the scheduling process (--ray off) or in a Ray actor.

A neuron is a normal run of the graph in SWEEP/neurons/N/. A neuron met for the first time starts
from its rows of the shared table (what other neurons' searches found that excites it); a neuron
whose folder already holds a run resumes it from its checkpoint, so a worker lost mid-neuron costs
at most the batch it had in flight.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from neuron_search.context import SearchContext, as_context
from neuron_search.runs.lifecycle import resumed_settings
from neuron_search.runs.search import STOPPED_BY_USER, check_setting_names, run_search
from neuron_search.services.runtime import subject_model, use_threads
from neuron_search.services.storage.run_folder import settings_file
from neuron_search.services.storage.shared_tops import SharedTops
from neuron_search.services.storage.sweep_folder import TABLE_FILE, neurons_dir, read_plan


def neuron_settings(folder: Path, neuron: int) -> dict[str, Any]:
    """NeuronSearch settings of one neuron of the sweep in `folder`."""
    plan = read_plan(folder)
    settings = {
        **plan.settings,
        "layer": plan.layer,
        "neuron": neuron,
        "results_dir": str(neurons_dir(folder)),
        "run_id": str(neuron),
        "sweep_table": str(folder / TABLE_FILE) if plan.shared else "",
    }
    settings["seed_prompts"] = tuple(settings.get("seed_prompts", ()))
    # A sweep explains its neurons only when asked (--explain): each explanation costs a few dozen LLM calls.
    settings.setdefault("explain", False)
    return settings


def run_neuron(folder: Path, neuron: int, threads: int = 0) -> dict[str, Any]:
    """Run (or resume) neuron `neuron` of the sweep to its end; returns what the scheduler records.
    `threads`: the torch threads of a worker that shares its machine, unless the sweep set --threads.

    `finished` is true only when the search reached its budget or its target; a search stopped
    before that (`stopped`: SIGTERM or Ctrl-C reached the process running it) is left to resume."""
    settings = neuron_settings(folder, neuron)
    if threads and not settings.get("threads"):
        settings["threads"] = threads
    if settings_file(neurons_dir(folder) / str(neuron)).is_file():
        resumed = {k: v for k, v in settings.items() if k not in ("run_id", "results_dir", "seed_prompts")}
        settings = resumed_settings(str(neuron), settings["results_dir"], resumed)
    else:
        if settings["sweep_table"]:
            table = SharedTops(settings["sweep_table"])
            try:
                known = [row.prompt for row in table.top(neuron, settings.get("top_k", 10))]
            finally:
                table.close()
            settings["seed_prompts"] = (*settings["seed_prompts"], *known)
    check_setting_names(settings)
    result = run_search(as_context(settings), progress=False)
    best = result.best
    # Finished: the search itself ended at its budget (iterations, prompts, LLM calls, time) or target.
    # A search stopped between batches (SIGTERM or Ctrl-C to this process) has not: it resumes.
    stopped = result.stop_reason == STOPPED_BY_USER
    return {
        "neuron": neuron,
        "best": best[1] if best else None,
        "best_prompt": best[0] if best else None,
        "measured": result.stats.get("measured", 0),
        "seconds": float(result.state.get("elapsed", 0.0)),
        "stopped": stopped,
        "finished": bool(result.stop_reason) and not stopped,
        "stop_reason": result.stop_reason,
    }


def layer_width(settings: dict[str, Any], layer: int) -> int:
    """d_mlp of the layer, from the subject model this process loads for its searches anyway."""
    subject = subject_model(settings.get("model", SearchContext.model), settings.get("device", SearchContext.device))
    subject.validate(layer, 0)
    return subject.d_mlp


class SweepWorker:
    """A Ray actor: loads the subject model once (on its first neuron) and runs neurons one after another,
    with `threads` torch threads (0: torch's default there, which Ray makes 1 for a 1-CPU actor)."""

    def __init__(self, folder: str, threads: int = 0) -> None:
        self.folder = Path(folder)
        self.threads = threads
        if threads:
            use_threads(threads)

    def pid(self) -> int:
        return os.getpid()

    def layer_width(self, settings: dict[str, Any], layer: int) -> int:
        return layer_width(settings, layer)

    def run(self, neuron: int) -> dict[str, Any]:
        return run_neuron(self.folder, neuron, self.threads)

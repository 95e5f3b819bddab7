"""A sweep's planning and resume rules, as pure functions: which neurons a new sweep searches with which
settings, what a resumed sweep may change, which neurons are done, and whether the sweep needs resuming.

The command line (`run.py sweep`) parses its options and calls these; the scheduler
(services/sweep/scheduler.py) runs the plan. Nothing here loads a model or touches a file: the
layer's width comes in as a number, the stored plan and the neurons' statuses as values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from neuron_search.context import SearchContext, validate
from neuron_search.services.errors import UserError
from neuron_search.services.storage.sweep_folder import NeuronStatus, SweepPlan
from neuron_search.services.sweep.neuron_spec import parse_neurons

DEFAULT_SHARED_TOP = 20  # prompts kept per neuron in the sweep's shared table of top prompts
FIXED_ON_RESUME = ("model", "layer", "position")  # what a neuron's activation means: a resumed sweep keeps them


def new_sweep_settings(settings: dict, neurons: str | None) -> tuple[int, dict]:
    """The layer and the per-neuron settings of a new sweep from the options given (results_dir left out),
    checked before any model loads. Unlike a single search, a sweep explains its neurons only when asked
    (--explain): each explanation is a few dozen LLM calls, longer than a small neuron's whole search with
    the embedded LLM."""
    if not neurons:
        raise UserError("Say which neurons to sweep: --neurons SPEC (e.g. 0:64, 12,840,1001 or all).")
    settings = dict(settings)
    layer = settings.pop("layer", SearchContext.layer)
    settings.setdefault("seed_prompts", ())
    settings.setdefault("explain", False)
    validate(SearchContext(**settings, layer=layer))  # bad settings are reported before any model loads
    return layer, settings


def new_plan(
    sweep_id: str, layer: int, settings: dict, neurons: str, width: int, shared: bool | None = None, shared_top: int | None = None
) -> SweepPlan:
    """The plan of a new sweep: the neurons SPEC `neurons` names among the layer's `width`, each searched
    with `settings` (from new_sweep_settings); shared measurements unless `shared` is False."""
    return SweepPlan(
        sweep_id=sweep_id,
        layer=layer,
        neurons=parse_neurons(neurons, width),
        settings={**settings, "seed_prompts": list(settings.get("seed_prompts", ()))},
        shared=shared is not False,
        shared_top=shared_top or DEFAULT_SHARED_TOP,
    )


def check_resume(neurons: str | None) -> None:
    """A resumed sweep searches the neurons it was started with."""
    if neurons:
        raise UserError("A resumed sweep searches the neurons it was started with: leave --neurons out with --resume.")


def resumed_plan(plan: SweepPlan, settings: dict, shared: bool | None = None) -> SweepPlan:
    """The stored `plan` with the options given to resume it: any search setting but --model, --layer and
    --position (which fix what an activation is) may change, for the neurons not done yet."""
    for name in FIXED_ON_RESUME:
        if name in settings and settings[name] != (plan.layer if name == "layer" else plan.settings.get(name)):
            raise UserError(f"Sweep {plan.sweep_id} measures with its own --{name}; leave --{name} out to resume it.")
    changed = {k: v for k, v in settings.items() if k != "layer"}
    merged = {**plan.settings, **changed}
    merged.setdefault("explain", False)  # a sweep explains its neurons only when asked (--explain)
    return dataclasses.replace(plan, settings=merged, shared=plan.shared if shared is None else shared)


def to_run(statuses: Sequence[NeuronStatus]) -> list[int]:
    """The neurons a (resumed) sweep still runs: every one not done; a failed one is tried again."""
    return [s.neuron for s in statuses if s.status != "done"]


class Tally(NamedTuple):
    done: list[NeuronStatus]  # searched to their budget, with a best prompt
    failed: list[NeuronStatus]
    unfinished: bool  # some neuron is left to a `--resume`


def tally(statuses: Sequence[NeuronStatus], stopped: bool) -> Tally:
    """Which neurons are done and which failed, and whether the sweep needs resuming (stopped, a neuron
    neither done nor failed, or a failure, which a resume tries again)."""
    done = [s for s in statuses if s.status == "done" and s.best is not None]
    failed = [s for s in statuses if s.status == "failed"]
    return Tally(done, failed, stopped or len(done) + len(failed) < len(statuses) or bool(failed))


def resume_command(sweep_id: str, results_dir: str | Path) -> str:
    """The command that continues the sweep."""
    extra = "" if str(results_dir) == str(SearchContext.results_dir) else f" --results-dir {results_dir}"
    return f"python run.py sweep --resume {sweep_id}{extra}"

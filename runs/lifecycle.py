"""A run's folder, opened and closed the same way by every way into a search.

`open_run` is what run.py, `NeuronSearch`, a sweep's workers and LangGraph Studio's server all do
around a search: check the settings, take the folder's lock, check that a resumed run measures what
it measured before, write run.json (which `run.py --list` and `run.py report` read); when the search
returns, write evidence.json (what needs the model: services/evidence/) and then results.json,
records.csv and report.html; and at the end close the run's record
store and forget its index, whatever way the search ended. The files themselves and their names are
services/storage/run_folder.py's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neuron_search.context import SearchContext, validate
from neuron_search.services.errors import UserError
from neuron_search.services.evidence.run_evidence import write_run_evidence
from neuron_search.services.llm.proposer import resolve_llm
from neuron_search.services.reports.results import write_run_results
from neuron_search.services.runtime import checked_subject, release_run
from neuron_search.services.storage.files import inside
from neuron_search.services.storage.run_folder import IDENTITY, read_settings, run_dir, run_lock, saved_settings, storage_errors, write_settings

log = logging.getLogger("neuron_search")


@contextmanager
def open_run(ctx: SearchContext) -> Iterator[Path]:
    """Hold run `ctx.run_id` for one search; yields its folder."""
    validate(ctx)
    if ctx.llm.startswith("ollama:"):
        resolve_llm(ctx.llm)  # a server that is down is reported now, before any model loads
    folder = run_dir(ctx, ctx.run_id)  # a run id that is not a plain name is refused here
    # Layer and neuron are checked against the model before the folder gets its first file, so a typo
    # leaves nothing behind (the model is cached: the search reuses it).
    checked_subject(ctx)
    with storage_errors(folder), run_lock(folder):
        settings = dataclasses.asdict(ctx)
        saved = saved_settings(folder)
        if saved is not None:
            check_identity(ctx.run_id, saved, settings)
        if saved != settings:
            write_settings(folder, settings)
        try:
            yield folder
            _keep_evidence(folder, ctx)  # before the results, which read it
            write_run_results(folder)
        finally:
            release_run(ctx, ctx.run_id)


def _keep_evidence(folder: Path, ctx: SearchContext) -> None:
    """Write the run's evidence.json (logit effects from the model's weights, the attribution of the
    top themes' best prompts and of the saved real snippets), for every search that opens a run: the
    CLI, the API, a sweep's worker and Studio.
    Evidence is extra: if it cannot be had, that is logged and the results are written without it."""
    try:
        write_run_evidence(
            folder, checked_subject(ctx), ctx.layer, ctx.neuron,
            position=ctx.position, allow_added_tokens=ctx.allow_added_tokens, model=ctx.model,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 (one line in the log; the run's results still get written)
        log.warning("Run %s: no evidence.json (%s: %s)", ctx.run_id, type(error).__name__, error)


def check_identity(run_id: str, saved: dict, settings: dict) -> None:
    for name in IDENTITY:
        if name in settings and settings[name] != saved[name]:
            raise UserError(
                f"Run {run_id} was made with {name}={saved[name]!r}, not {settings[name]!r}: a resumed run "
                "measures the same neuron of the same model. Leave --model/--layer/--neuron/--position out "
                "to resume it, or start a new run."
            )


def resumed_settings(run_id: str, results_dir: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The saved settings of run `run_id` with `settings` over them; budgets, the LLM and the other
    knobs may change, what is measured (model, layer, neuron, position) not."""
    saved = read_settings(inside(results_dir, run_id), "to resume")
    check_identity(run_id, saved, settings)
    saved.update(settings, run_id=run_id, results_dir=results_dir)
    saved["seed_prompts"] = tuple(saved["seed_prompts"])
    return saved

"""The Python API: run, resume and read a neuron search from a script or a notebook.

    from neuron_search import NeuronSearch
    result = NeuronSearch(model="gpt2", layer=9, neuron=840).run(iterations=200)
    result.best  # (prompt, activation)

`run.py` is a thin command-line layer over this module, and this module a thin one over the search
itself (runs/search.py: the run's folder opened, the graph driven, what it found). Importing it loads
no model.
"""

from __future__ import annotations

from typing import Any

from neuron_search.context import SearchContext, as_context
from neuron_search.runs.lifecycle import resumed_settings
from neuron_search.runs.search import STOPPED_BY_USER, SearchResult, check_setting_names, run_search
from neuron_search.services.reports.display import ProgressDisplay
from neuron_search.services.storage.run_folder import new_run_id

__all__ = ["STOPPED_BY_USER", "NeuronSearch", "SearchResult"]


class NeuronSearch:
    """A search for prompts that drive one neuron; every SearchContext field is a keyword."""

    def __init__(self, **settings: Any) -> None:
        check_setting_names(settings)
        self.settings = settings

    @classmethod
    def resume(cls, run_id: str, results_dir: str = "results", **settings: Any) -> NeuronSearch:
        """A search that continues run `run_id` with its saved settings; budgets, the LLM and
        the other knobs may be changed, what is measured (model, layer, neuron, position) not."""
        return cls(**resumed_settings(run_id, results_dir, settings))

    def context(self, **overrides: Any) -> SearchContext:
        settings = {**self.settings, **overrides}
        if not settings.get("run_id"):
            settings["run_id"] = new_run_id()
        self.settings["run_id"] = settings["run_id"]  # a second run() continues this one
        return as_context(settings)

    def run(self, progress: ProgressDisplay | bool = True, **overrides: Any) -> SearchResult:
        """Run (or continue) the search; keyword overrides are settings such as iterations=200.

        progress: True for a live progress line (terminal or notebook), False for none, or
        any object with `update(state, context)` and `close()`.
        """
        return run_search(self.context(**overrides), progress)

"""neuron_search: find text prompts that make one MLP neuron of a transformer fire.

    from neuron_search import NeuronSearch
    result = NeuronSearch(model="gpt2", layer=9, neuron=840).run(max_prompts=2000)

The package's folder is the repository: graph/ and nodes/ (the LangGraph agent), state.py, context.py,
runs/ (a run's and a sweep's lifecycle), services/ (the layers below), cli/ and run.py (the command line),
api.py (this API). Importing the package loads nothing heavy; NeuronSearch is imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NeuronSearch", "SearchResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from neuron_search import api

        return getattr(api, name)
    raise AttributeError(f"module 'neuron_search' has no attribute {name!r}")

"""What LangGraph Studio's server runs (see langgraph.json). Importing it loads no model.

The server calls `make_graph` for every use of the graph. To draw it or read its schemas it gets
the graph as it is; to execute a run, the run's folder is opened first, exactly as `run.py` and
`NeuronSearch` open it (runs/lifecycle.open_run: settings checked, so a bad form value is a
clear error in Studio; the folder's lock, so two runs with one run_id cannot interleave; run.json,
so `run.py --list` and `run.py report` see the run), and closed when the run ends, however it ends.
Studio's server brings its own persistence, so this graph is compiled without a checkpointer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Mapping

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph_sdk.runtime import ServerRuntime

from neuron_search.context import SERVER_SETTINGS, SearchContext, as_context
from neuron_search.graph.builder import build_graph
from neuron_search.runs.lifecycle import open_run
from neuron_search.services.errors import UserError
from neuron_search.services.storage.run_folder import run_id_for

graph = build_graph().compile(name="neuron-search")

FORM_PATHS = "NEURON_SEARCH_FORM_PATHS"  # "1": the operator lets the form choose them too


def check_form(form: SearchContext, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a form that chooses a results folder, model, embedder or sweep table
    other than the server's own (context.SERVER_SETTINGS: its environment sets those), unless the
    operator set NEURON_SEARCH_FORM_PATHS=1: a form value could otherwise name any folder or file."""
    defaults = SearchContext()
    refused = [name for name in SERVER_SETTINGS if getattr(form, name) != getattr(defaults, name)]
    if refused and environ.get(FORM_PATHS) != "1":
        raise UserError(
            f"This server does not let the form choose {', '.join(refused)}: its operator sets "
            f"{', '.join(SERVER_SETTINGS[name] for name in refused)} in the server's environment (or lets the form "
            f"choose them with {FORM_PATHS}=1). Leave those fields at their defaults."
        )


@contextlib.asynccontextmanager
async def make_graph(config: RunnableConfig, runtime: ServerRuntime[SearchContext]) -> AsyncIterator[Pregel]:
    execution = runtime.execution_runtime
    if execution is None:  # drawing, schemas, state reads: nothing runs
        yield graph
        return
    ctx = as_context(execution.context)
    check_form(ctx)
    ctx = dataclasses.replace(ctx, run_id=run_id_for(ctx, config["configurable"].get("thread_id")))
    run = contextlib.ExitStack()
    # Files, locks and SQLite block: off the server's event loop.
    await asyncio.to_thread(run.enter_context, open_run(ctx))
    try:
        yield graph
    finally:
        await asyncio.to_thread(run.close)

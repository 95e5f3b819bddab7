"""One traced search, run by tests/test_tracing.py in a fresh interpreter.

LangSmith and LangChain read the LANGSMITH_* variables once and cache them, so each tracing
scenario (on, off, sampled out) needs its own process. The test sets the environment, points
LANGSMITH_ENDPOINT at a local collector, and runs:

    python tests/tracing_scenario.py MODEL_DIR RESULTS_DIR ITERATIONS

It runs NeuronSearch on the tiny GPT-2 with a scripted proposer, flushes the tracer, and prints
one JSON line with what the search found.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(model_dir: str, results_dir: str, iterations: int) -> None:
    from neuron_search.testing.helpers import fresh_answers, scripted
    from neuron_search.api import NeuronSearch

    search = NeuronSearch(
        model=model_dir,
        layer=1,
        neuron=3,
        device="cpu",
        llm=scripted(fresh_answers(10)),
        strategy="llm",
        batch_size=4,
        results_dir=results_dir,
        run_id="traced",
    )
    result = search.run(progress=False, iterations=iterations)

    # Send what the background tracer still holds before the interpreter exits. This flushes
    # LangSmith's client only if tracing made one: it creates none itself.
    from langchain_core.tracers.langchain import wait_for_all_tracers

    wait_for_all_tracers()
    print(json.dumps({"iteration": result.state["iteration"], "best": result.best[1], "llm": search.settings["llm"]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests never reach the hub: models come from the tests themselves or from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANGSMITH_TRACING", "false")
os.environ.setdefault("LANGGRAPH_CLI_NO_ANALYTICS", "1")
# Two test workers (-n 2) share the machine's cores: each test's torch, llama.cpp and tokenizers, and
# the processes it starts, take one thread, instead of each taking every core and fighting over them
# (the suite measured 12.2 min with torch's default threads, 10.4 with one, on 2 idle cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from neuron_search.testing.tiny_model import build_tiny_gpt2  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def gemma():
    """The bundled Gemma 3 270M on the CPU, loaded once per test process (about 10 s a load): the
    instance a search in this process gets too (`subject_model` caches it). Tests only read it."""
    from neuron_search.services.runtime import subject_model

    return subject_model("embedded", "cpu")


# The longest tests that share no fixture with their neighbours run first (about 85 s each, alone in a
# process or a subprocess): last in a worker's queue, one of them kept a core busy for its whole length
# after the other worker had finished (an idle suite took 578 s, its last 86 s on one core).
FIRST = (
    "tests/test_memory.py::",
    "tests/test_cli.py::test_offline_search_on_the_bundled_model_and_embedded_llm",
    "tests/test_readme.py::test_readme_python_example_runs",
)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(FIRST))  # stable: the rest keep their order

"""LangGraph Studio's backend: `langgraph dev` serves the graph, its schemas, and runs a search.

The server runs in its own process from the repository root, as a user starts it, on a free
loopback port, with no LangSmith key and no network. It is always stopped (its whole process
group) when the tests end. Also checked here: importing the Studio module loads no model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuron_search.graph.builder import NODE_NAMES
from neuron_search.testing.helpers import tiny_settings

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300

NODES = set(NODE_NAMES)  # graph/builder.py's one list; tests/test_graph.py checks it against nodes/
CONDITIONAL_EDGES = {
    ("stagnation_check", "hypothesize"),
    ("stagnation_check", "explain"),
    ("stagnation_check", "generate"),
    ("stagnation_check", "random_fallback"),
    ("stagnation_check", "gradient"),
    ("stagnation_check", "__end__"),
    ("semantic_filter", "measure_activation"),
    ("semantic_filter", "generate"),
    ("semantic_filter", "random_fallback"),
}
MODEL_LIBRARIES = ("transformer_lens", "sentence_transformers", "xllamacpp")


def test_importing_the_studio_graph_loads_no_model():
    """`langgraph dev` imports graph/studio.py at startup: it must stay cheap."""
    code = (
        "import json, sys\n"
        "import graph.studio\n"
        f"print(json.dumps([m for m in {MODEL_LIBRARIES!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_config(tmp_dir: Path) -> Path:
    """The repository's langgraph.json; without its `env` file when a developer has a .env.

    With no .env (a fresh clone, CI) the server is started exactly as a user starts it, which
    also checks that a missing .env does not stop it. A developer's .env may turn tracing on
    with a real key: the server would then read it, so the test uses a copy without `env`.
    """
    config = ROOT / "langgraph.json"
    if not (ROOT / ".env").exists():
        return config
    settings = json.loads(config.read_text())
    settings.pop("env", None)
    copy = tmp_dir / "langgraph.json"
    copy.write_text(json.dumps(settings))
    return copy


def _log_tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A running `langgraph dev` server: yields (url, log path); stops it whatever happens."""
    pytest.importorskip("langgraph_api", reason="needs langgraph-cli[inmem] (the dev extra)")
    tmp_dir = tmp_path_factory.mktemp("studio")
    log = tmp_dir / "server.log"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
    env.update(
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        NO_PROXY="127.0.0.1,localhost",
        # The tests' forms name their own results folders and the tiny model: the operator allows it.
        NEURON_SEARCH_FORM_PATHS="1",
    )
    command = [
        sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
        "--config", str(_server_config(tmp_dir)),
        # Other files of the project may change while the tests run: do not restart mid-test.
        "--no-reload",
        # `langgraph dev` runs one run at a time unless told otherwise; a deployment runs several.
        "--n-jobs-per-worker", "4",
    ]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(server, url, log)
        yield url, log
    finally:
        _stop(server)


def _wait_until_ready(server: subprocess.Popen, url: str, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`langgraph dev` exited with {server.returncode} before it was ready:\n{_log_tail(log)}")
        try:
            if httpx.get(f"{url}/ok", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"`langgraph dev` did not answer GET /ok within {STARTUP_TIMEOUT_S} s:\n{_log_tail(log)}")


def _stop(server: subprocess.Popen) -> None:
    """End the server and every process it started (its process group)."""
    if server.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def client(studio):
    from langgraph_sdk import get_sync_client

    url, _ = studio
    return get_sync_client(url=url, api_key=None)


@pytest.fixture(scope="module")
def assistant_id(client) -> str:
    assistants = client.assistants.search(graph_id="neuron_search")
    assert assistants, "the server lists no assistant for the graph neuron_search"
    return assistants[0]["assistant_id"]


def test_studio_draws_the_graphs_nodes_and_the_conditional_edges(client, assistant_id):
    drawn = client.assistants.get_graph(assistant_id)
    assert {n["id"] for n in drawn["nodes"]} - {"__start__", "__end__"} == NODES
    conditional = {(e["source"], e["target"]) for e in drawn["edges"] if e.get("conditional")}
    assert conditional == CONDITIONAL_EDGES
    plain = {(e["source"], e["target"]) for e in drawn["edges"] if not e.get("conditional")}
    assert ("__start__", "seed") in plain and ("update_records", "stagnation_check") in plain


def test_studio_form_shows_the_context_fields_with_defaults_and_help(client, assistant_id):
    from neuron_search.context import SearchContext, describe

    schemas = client.assistants.get_schemas(assistant_id)
    # The form is built from context_schema; the server mirrors it into the deprecated config_schema.
    fields = schemas["context_schema"]["properties"]
    assert set(fields) == set(SearchContext.__dataclass_fields__)
    defaults = SearchContext()
    for name in ("neuron", "layer", "model", "llm", "iterations", "similarity_threshold", "results_dir"):
        assert fields[name]["default"] == getattr(defaults, name), name
        assert fields[name]["description"] == describe(name), name
    assert fields["neuron"]["type"] == "integer" and fields["seed_prompts"]["type"] == "array"
    # The state's schema (what Studio shows as input and output) is built, not dropped with a warning.
    assert schemas["input_schema"] is not None and "best" in schemas["input_schema"]["properties"]
    assert schemas["output_schema"] is not None


def test_a_short_search_runs_to_completion_through_the_server(client, studio, tiny_model_dir, tmp_path):
    # iterations=1: the seeds are measured and stagnation_check ends the run before any LLM
    # call, so the run needs no LLM; "embedded" is only resolved, never loaded.
    context = tiny_settings(
        tiny_model_dir, llm="embedded", strategy="llm",
        batch_size=4, iterations=1, results_dir=str(tmp_path), run_id="studio-run", explain=False,
    )
    started = time.monotonic()
    final = client.runs.wait(None, "neuron_search", input={}, context=context, raise_error=False)
    elapsed = time.monotonic() - started
    _, log = studio
    assert isinstance(final, dict) and "best" in final, f"run failed: {final!r}\n{_log_tail(log)}"
    assert elapsed < RUN_TIMEOUT_S
    assert final["stop_reason"] == "ran 1 iterations" and final["iteration"] == 1
    assert isinstance(final["best"]["activation"], float)
    assert final["stats"]["llm_calls"] == 0 and final["stats"]["measured"] > 0
    assert (tmp_path / "studio-run" / "records.sqlite").is_file()
    # The run's folder is opened and closed as the CLI's is: run.json, the results files, and
    # `run.py --list` shows it with its numbers.
    folder = tmp_path / "studio-run"
    assert {"run.json", "results.json", "records.csv", "report.html"} <= {p.name for p in folder.iterdir()}
    listed = subprocess.run(
        [sys.executable, "run.py", "--list", "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "200"}, timeout=120,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "studio-run" in line)
    assert str(final["stats"]["measured"]) in row and f"{final['best']['activation']:.4f}" in row


def test_a_bad_form_value_is_a_clear_error_in_studio(client, tiny_model_dir, tmp_path):
    context = tiny_settings(tiny_model_dir, position="middle", batch_size=0,
                   iterations=1, results_dir=str(tmp_path), run_id="bad")  # fmt: skip
    final = client.runs.wait(None, "neuron_search", input={}, context=context, raise_error=False)
    message = json.dumps(final)
    assert "These settings cannot work" in message, message
    assert "--position is max or last" in message and "--batch-size must be at least 1" in message
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_two_studio_runs_at_once_get_the_activations_each_gets_alone(client, tiny_model_dir, tmp_path):
    """Two neurons at two layers, many padded batches each, in one server process at the same time."""
    import threading

    from neuron_search.services.model.subject_model import SubjectModel

    words = "alpha beta gamma delta river stone cloud seven ninety copper violet engine".split()
    seeds = [" ".join(words[(i * 7 + j) % len(words)] for j in range(1 + i % 9)) + f" {i}" for i in range(1500)]
    runs = {"a": (0, 5), "b": (1, 17)}
    finals: dict[str, dict] = {}

    def start(name: str) -> None:
        layer, neuron = runs[name]
        context = dict(model=str(tiny_model_dir), layer=layer, neuron=neuron, device="cpu", llm="embedded", strategy="llm",
                       batch_size=4, iterations=1, seed_prompts=seeds, results_dir=str(tmp_path), run_id=f"at-once-{name}",
                       explain=False)  # fmt: skip
        finals[name] = client.runs.wait(None, "neuron_search", input={}, context=context, raise_error=False)

    threads = [threading.Thread(target=start, args=(name,)) for name in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RUN_TIMEOUT_S)

    alone = SubjectModel.load(str(tiny_model_dir), "cpu")
    for name, (layer, neuron) in runs.items():
        assert finals[name].get("stop_reason") == "ran 1 iterations", finals[name]
        db = sqlite3.connect(tmp_path / f"at-once-{name}" / "records.sqlite")
        rows = db.execute("SELECT prompt, activation, error FROM records").fetchall()
        db.close()
        assert len(rows) >= len(seeds) and all(error == "" for _, _, error in rows)
        prompts = [prompt for prompt, _, _ in rows]
        expected = [m["activation"] for m in alone.measure(prompts, layer, neuron)]
        assert [activation for _, activation, _ in rows] == pytest.approx(expected, abs=1e-6), name

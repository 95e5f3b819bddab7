"""LangSmith tracing, with no network: a local collector stands in for the LangSmith API.

Each scenario runs tests/tracing_scenario.py in a fresh interpreter, because LangSmith and
LangChain read the LANGSMITH_* variables once per process. LANGSMITH_ENDPOINT points at a tiny
HTTP server on 127.0.0.1 that answers like LangSmith (GET /info, POST /runs/multipart,
/runs/batch, /runs) and keeps every request, so the test can read the traced runs back.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parent / "tracing_scenario.py"
ROOT = SCENARIO.parent.parent
SCENARIO_TIMEOUT_S = 300


class Collector:
    """A stand-in for the LangSmith API on a free loopback port that records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                requests.append((self.command, self.path, dict(self.headers), body))
                # No "zstd_compression_enabled" flag: the client sends plain multipart.
                answer = b'{"version": "collector"}' if self.path.startswith("/info") else b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PATCH = do_PUT = _record

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def run_requests(self) -> list[tuple[str, str, dict[str, str], bytes]]:
        return [r for r in self.requests if r[1].startswith("/runs")]

    def runs(self) -> dict[str, dict]:
        """Every traced run by id, its posted fields merged with later patches."""
        runs: dict[str, dict] = {}

        def merge(op: str, run_id: str, fields: dict) -> None:
            run = runs.setdefault(run_id, {"id": run_id})
            for key, value in fields.items():
                if key == "extra" and isinstance(value, dict):
                    run.setdefault("extra", {}).update(value)
                else:
                    run[key] = value

        for method, path, headers, body in self.run_requests():
            if path.startswith("/runs/multipart"):
                for name, value in _multipart_fields(headers["Content-Type"], body):
                    op, run_id, *field = name.split(".", 2)
                    if op in ("post", "patch"):
                        merge(op, run_id, {field[0]: value} if field else value)
            elif path.startswith("/runs/batch"):
                batch = json.loads(body)
                for op in ("post", "patch"):
                    for run in batch.get(op) or []:
                        merge(op, run["id"], run)
            else:  # POST /runs or PATCH /runs/{id}
                run = json.loads(body)
                merge(method.lower(), run.get("id") or path.rsplit("/", 1)[-1], run)
        return runs


def _multipart_fields(content_type: str, body: bytes):
    """(part name, JSON value) for each JSON part of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name and part.get_content_type() == "application/json":
            yield name, json.loads(part.get_payload(decode=True))


@pytest.fixture
def collector():
    collector = Collector()
    try:
        yield collector
    finally:
        collector.close()


def run_scenario(collector: Collector, model_dir: Path, results_dir: Path, iterations: int, **env: str) -> dict:
    """Run tests/tracing_scenario.py with LangSmith pointed at the collector; its JSON result."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
    clean.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        NO_PROXY="127.0.0.1,localhost",
        LANGSMITH_ENDPOINT=collector.url,
        LANGSMITH_API_KEY="lsv2_pt_fake_key_for_tests",
        LANGSMITH_PROJECT="neuron-search-tests",
        **env,
    )
    done = subprocess.run(
        [sys.executable, str(SCENARIO), str(model_dir), str(results_dir), str(iterations)],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
    )
    assert done.returncode == 0, f"scenario failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_iteration_is_a_root_trace_tagged_with_the_neuron(collector, tiny_model_dir, tmp_path):
    found = run_scenario(collector, tiny_model_dir, tmp_path, 2, LANGSMITH_TRACING="true")
    assert found["iteration"] == 2

    runs = collector.runs()
    roots = [r for r in runs.values() if not r.get("parent_run_id")]
    # NeuronSearch invokes the graph once per iteration, so each iteration is one trace, and the
    # explanation at the end one more, with the same tags and metadata.
    assert len(roots) == 3, [r.get("name") for r in roots]
    for root in roots:
        assert root["name"] == "neuron-search L1 N3"
        assert {"neuron-search", "layer:1", "neuron:3", f"model:{tiny_model_dir}"} <= set(root["tags"])
        metadata = root["extra"]["metadata"]
        assert metadata["neuron"] == 3 and metadata["layer"] == 1
        assert metadata["model"] == str(tiny_model_dir)
        assert metadata["llm"] == found["llm"]
        assert metadata["run_id"] == "traced"

    # The nodes are child runs of their iteration's trace, and the LLM call is traced in the second.
    names_by_trace: dict[str, set[str]] = {}
    for run in runs.values():
        names_by_trace.setdefault(run.get("trace_id"), set()).add(run.get("name"))
    first, second, last = sorted(roots, key=lambda r: r.get("start_time", ""))
    assert {"seed", "semantic_filter", "measure_activation", "update_records", "stagnation_check"} <= names_by_trace[first["id"]]
    assert "explain" in names_by_trace[last["id"]] and "explain" not in names_by_trace[second["id"]]
    assert {"generate", "FakeListChatModel"} <= names_by_trace[second["id"]]
    assert "generate" not in names_by_trace[first["id"]]


def test_no_request_leaves_when_tracing_is_off(collector, tiny_model_dir, tmp_path):
    found = run_scenario(collector, tiny_model_dir, tmp_path, 2, LANGSMITH_TRACING="false")
    assert found["iteration"] == 2
    assert collector.requests == []


def test_a_sampling_rate_of_zero_traces_no_iteration(collector, tiny_model_dir, tmp_path):
    found = run_scenario(
        collector, tiny_model_dir, tmp_path, 2, LANGSMITH_TRACING="true", LANGSMITH_TRACING_SAMPLING_RATE="0"
    )
    assert found["iteration"] == 2
    assert collector.run_requests() == [], collector.runs()

"""Issue #5: what a user, the LLM or the machine can get wrong, and what the search does then.

Bad input ends in a one-paragraph message and exit code 2 (run.main in-process: an exception that
escaped would fail the test; one case runs `python run.py` to show there is no traceback). Bad LLM
output and faults during a run are survived and counted, each shown with a scripted chat model.
Ollama is never needed: a stand-in HTTP server on 127.0.0.1 plays it, or a closed loopback port.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import sqlite3
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from neuron_search import run
import scripted_run
import neuron_search.services.llm.embedded_llm as embedded_llm_module
from neuron_search.testing.helpers import WORDS, fresh_answers, scripted, tiny_settings
from neuron_search.api import NeuronSearch
from neuron_search.services.llm import proposer
from neuron_search.services.storage.record_store import RecordStore
from neuron_search.services.reports.results import saved_state
from neuron_search.services.model.subject_model import SubjectModel
from test_cli import run_cli

SEED = "The old lighthouse keeper watched the storm roll in."


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at 80 columns when captured; a wide console keeps each message on one line."""
    monkeypatch.setenv("COLUMNS", "400")


def cli(capsys, *args: str) -> tuple[int, str]:
    """run.main in this process: its exit code and its output with whitespace collapsed."""
    code = run.main(list(args))
    out = capsys.readouterr().out
    return code, " ".join(out.split())


def tiny(model_dir: Path, *more: str) -> list[str]:
    return ["--model", str(model_dir), "--layer", "1", "--neuron", "3", "--device", "cpu", "--strategy", "llm", "--quiet", *more]


def tiny_search(model_dir: Path, results_dir: Path, llm: str, **settings: Any) -> NeuronSearch:
    """A one-prompt seed batch (iteration 0), then two LLM batches; only exact duplicates are rejected.

    Batches hold what the LLM wrote and nothing else (fill="none"), so each test sees how its LLM
    fault is handled; tests/test_graph.py and tests/test_nodes.py cover the mutations that fill.
    """
    base = tiny_settings(
        model_dir, llm=llm, strategy="llm", batch_size=4, results_dir=str(results_dir),
        run_id="run", builtin_seeds=False, seed_prompts=(SEED,), similarity_threshold=0.99, max_attempts=1, iterations=3,
        fill="none",
    )  # fmt: skip
    return NeuronSearch(**{**base, **settings})


def store_rows(run_dir: Path) -> list[tuple]:
    return scripted_run.stored_rows(run_dir / "records.sqlite")


def integrity(run_dir: Path) -> str:
    db = sqlite3.connect(run_dir / "records.sqlite")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


# --- Bad input from the user --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("layer", "neuron", "expected"),
    [
        ("1", "-1", ["Neuron -1 does not exist", "256 neurons", "0 to 255", "--neuron"]),
        ("1", "256", ["Neuron 256 does not exist", "256 neurons", "0 to 255", "--neuron"]),
        ("2", "3", ["Layer 2 does not exist", "2 layers", "0 to 1", "--layer"]),
        ("-1", "3", ["Layer -1 does not exist", "2 layers", "0 to 1", "--layer"]),
    ],
)
def test_a_neuron_or_layer_outside_the_model_names_its_actual_sizes(layer, neuron, expected, capsys, tiny_model_dir, tmp_path):
    args = ["--model", str(tiny_model_dir), "--layer", layer, "--neuron", neuron, "--device", "cpu", "--quiet"]
    code, out = cli(capsys, *args, "--llm", scripted(["unused"]), "--results-dir", str(tmp_path))
    assert code == 2
    assert out.startswith("Error:")
    for text in expected:
        assert text in out


@pytest.mark.parametrize("model", ["no-such-model", "openai-community/not-in-the-local-cache"])
def test_an_unknown_model_or_one_that_cannot_be_downloaded_points_to_the_bundled_model(model, capsys, tmp_path):
    # HF_HUB_OFFLINE=1 (conftest): a hub name that is not in the local cache cannot be fetched.
    code, out = cli(capsys, "--model", model, "--llm", "embedded", "--device", "cpu", "--results-dir", str(tmp_path), "--quiet")
    assert code == 2
    assert f"Could not load the subject model '{model}'" in out
    assert "--model embedded to run offline on the bundled" in out


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandInOllama:
    """A stand-in for an Ollama server, NOT Ollama: a tiny HTTP server on 127.0.0.1 that speaks the
    two endpoints the proposer uses. GET /api/tags lists `models`; POST /api/chat answers with the
    next of `answers` as one JSON object (what Ollama's client reads, streaming or not). Once the
    answers are used up it plays a failure: "stop" drops the connection and closes its socket (the
    server went away mid-run), "stall" never answers (the server hangs, the client times out)."""

    def __init__(self, models: list[str], answers: list[str] = (), then: str = "stop") -> None:
        self.models, self.answers, self.then = models, list(answers), then
        self.chat_requests = 0
        self.release = threading.Event()
        self.closed = False
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, payload: dict) -> None:
                body = (json.dumps(payload) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != "/api/tags":
                    self.send_error(404)
                    return
                self._reply({"models": [{"name": name, "model": name} for name in stand_in.models]})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.chat_requests += 1
                if stand_in.chat_requests <= len(stand_in.answers):
                    self._reply({
                        "model": request["model"], "created_at": "2026-01-01T00:00:00Z", "done": True, "done_reason": "stop",
                        "message": {"role": "assistant", "content": stand_in.answers[stand_in.chat_requests - 1]},
                    })  # fmt: skip
                    return
                if stand_in.then == "stall":
                    stand_in.release.wait(30)
                else:
                    threading.Thread(target=stand_in.close).start()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        if not self.closed:
            self.closed = True
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def ollama(monkeypatch):
    """Start a StandInOllama and point OLLAMA_HOST at it."""
    started = []

    def start(**kwargs) -> StandInOllama:
        server = StandInOllama(**kwargs)
        started.append(server)
        monkeypatch.setenv("OLLAMA_HOST", server.host)
        return server

    yield start
    for server in started:
        server.close()


def test_ollama_not_running_says_how_to_start_it(capsys, monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")
    code, out = cli(capsys, *tiny(tiny_model_dir), "--llm", "ollama:tiny", "--results-dir", str(tmp_path))
    assert code == 2
    assert "does not answer" in out and "`ollama serve`" in out and "--llm embedded" in out


def test_ollama_is_checked_before_any_model_loads(capsys, monkeypatch, tmp_path):
    """A missing server is reported at once, not after minutes of loading a big subject model."""
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")
    model = str(tmp_path / "no-such-model")  # loading it would fail with another message
    code, out = cli(capsys, "--model", model, "--llm", "ollama:tiny", "--results-dir", str(tmp_path), "--quiet")
    assert code == 2
    assert "does not answer" in out and "Could not load the subject model" not in out


def test_ollama_without_the_model_says_which_pull_to_run(capsys, ollama, tiny_model_dir, tmp_path):
    ollama(models=["llama3.1:latest"])
    code, out = cli(capsys, *tiny(tiny_model_dir), "--llm", "ollama:tiny", "--results-dir", str(tmp_path))
    assert code == 2
    assert "does not have the model 'tiny'" in out and "`ollama pull tiny`" in out and "--llm embedded" in out


@pytest.mark.parametrize("server", ["down", "without the model"])
def test_llm_auto_falls_back_to_the_embedded_llm_and_says_so(server, ollama, monkeypatch, caplog):
    monkeypatch.setattr(proposer, "_warned", set())  # said once per process: this test's run says it
    if server == "down":
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")
    else:
        ollama(models=["some-other-model:latest"])
    with caplog.at_level(logging.WARNING, logger="neuron_search"):
        assert proposer.resolve_llm("auto") == "embedded"
        assert proposer.resolve_llm("auto") == "embedded"  # a second run in the process: not said again
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.endswith("using the embedded LLM instead.")
    assert ("`ollama serve`" if server == "down" else f"`ollama pull {proposer.DEFAULT_OLLAMA_MODEL}`") in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"", "holds no prompts"),
        (b"\n   \n\t\n\n", "holds no prompts"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
        ("café au lait\nthé vert\n".encode("latin-1"), "is not UTF-8"),
    ],
    ids=["missing", "empty", "only-blank-lines", "binary", "latin-1"],
)
def test_a_bad_seed_prompts_file_is_refused_before_anything_loads(content, expected, capsys, tmp_path):
    seeds = tmp_path / "seeds.txt"
    if content is not None:
        seeds.write_bytes(content)
    results = tmp_path / "results"
    code, out = cli(capsys, "--seed-prompts", str(seeds), "--results-dir", str(results), "--quiet")
    assert code == 2
    assert f"The seed prompts file {seeds}" in out and expected in out
    assert not results.exists()


def test_seed_prompts_longer_than_the_context_are_cut_to_fit_and_blank_lines_skipped(capsys, tiny_model_dir, tmp_path):
    long_prompt = " ".join(WORDS * 60)  # ~840 words: far beyond the tiny model's 128 positions
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"\n{long_prompt}\n\n   \nA short prompt.\n", encoding="utf-8")
    code, out = cli(capsys, *tiny(tiny_model_dir), "--llm", scripted(["unused"]), "--seed-prompts", str(seeds),
                    "--no-builtin-seeds", "--iterations", "0", "--max-prompt-tokens", "1000",
                    "--results-dir", str(tmp_path), "--run-id", "long")  # fmt: skip
    assert code == 0, out
    store = RecordStore(tmp_path / "long" / "records.sqlite")
    records = list(store)
    store.close()
    assert len(records) == 2 and all(r["error"] == "" for r in records)
    cut = next(r for r in records if r["prompt"] != "A short prompt.")
    assert long_prompt.startswith(cut["prompt"][:100]) and 0 < len(cut["tokens"]) <= 127  # n_ctx minus BOS


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--batch-size", "0"], ["--batch-size must be at least 1"]),
        (["--top-k", "0"], ["--top-k must be at least 1"]),
        (["--iterations", "-1"], ["--iterations cannot be negative"]),
        (["--max-prompts", "-5"], ["--max-prompts cannot be negative"]),
        (["--time-limit", "-1"], ["--time-limit cannot be negative"]),
        (["--patience", "-2"], ["--patience cannot be negative"]),
        (["--lead-distance", "-1"], ["--lead-distance cannot be negative"]),
        (["--lead-distance-share", "1.5"], ["--lead-distance-share must lie in [0, 1]"]),
        (["--lead-distance-share", "-0.5"], ["--lead-distance-share must lie in [0, 1]"]),
        (["--lead-distance", "nan"], ["--lead-distance must be a finite number"]),
        (["--similarity-threshold", "1.5"], ["--similarity-threshold must lie in [0, 1]"]),
        (["--similarity-threshold", "-0.1"], ["--similarity-threshold must lie in [0, 1]"]),
        (["--bucket-percentiles", "90,10"], ["--bucket-percentiles must be LOW,HIGH"]),
        (["--bucket-percentiles", "low,high"], ["--bucket-percentiles takes two numbers"]),
        (
            ["--batch-size", "0", "--iterations", "-3", "--similarity-threshold", "2"],
            ["--batch-size must be at least 1", "--iterations cannot be negative", "--similarity-threshold must lie in [0, 1]"],
        ),
    ],
)
def test_nonsensical_options_are_all_named_in_one_message(options, expected, capsys, tmp_path):
    results = tmp_path / "results"
    code, out = cli(capsys, *options, "--results-dir", str(results), "--quiet")
    assert code == 2
    for text in expected:
        assert text in out
    assert out.count("Error:") == 1
    assert not results.exists()  # refused before any folder is made or any model is loaded


# --- Bad output from the LLM --------------------------------------------------------------------

NON_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufeff\ufffd]")


def llm_batches(result) -> dict[int, list[str]]:
    batches = defaultdict(list)
    for r in result.records:
        if r["iteration"] > 0:
            batches[r["iteration"]].append(r["prompt"])
    return batches


def silent_char_tokenizes_to_nothing(monkeypatch) -> None:
    """Some tokenizers drop characters they have no token for; GPT-2's never does, so the tiny
    model is made to drop U+2060 (word joiner): a prompt of only that tokenizes to nothing."""
    original = SubjectModel.token_ids
    monkeypatch.setattr(SubjectModel, "token_ids", lambda self, prompt: original(self, prompt.replace("\u2060", "")))


BAD_ANSWERS = {
    "empty": [""],
    "refusal": ["I'm sorry, but I can't help with that request. As an AI, I must decline."],
    "the same prompt again": ["the very same prompt"],
    "a thousand prompts": ["\n".join(f"{WORDS[i % 14]} {WORDS[i * 5 % 14]} number {i}" for i in range(k, k + 1000)) for k in (0, 1000)],
    "non-text bytes": ["\x00\x01\x02\x07\ufffd\ud800\x7f\x9b", "clean\x00 words\x07 here\ufeff"],
    "tokenizes to nothing": ["\u2060\u2060\u2060\nsomething measurable"],
    "markdown": [
        "Sure! Here are some prompts:\n\n```markdown\n1. **Bold prompt about rivers**\n2. Plain prompt about stones\n```\n\n"
        "## Notes\nThese prompts should make the neuron fire."
    ],
    "broken JSON": ['{"prompts": ["json prompt one", "json prompt two"', '[{"prompt": }]'],
}


@pytest.mark.parametrize("kind", list(BAD_ANSWERS))
def test_bad_llm_answers_are_survived_and_counted(kind, monkeypatch, tiny_model_dir, tmp_path):
    if kind == "tokenizes to nothing":
        silent_char_tokenizes_to_nothing(monkeypatch)
    result = tiny_search(tiny_model_dir, tmp_path, scripted(BAD_ANSWERS[kind])).run(progress=False)

    stats, prompts = result.stats, [r["prompt"] for r in result.records]
    assert result.stop_reason == "ran 3 iterations"  # the search went on to its budget
    assert all(r["prompt"].strip() and not NON_TEXT.search(r["prompt"]) for r in result.records if r["source"] == "llm")
    assert stats["measured"] + stats["failed"] == len(prompts)
    if kind in ("empty", "refusal"):
        assert stats["llm_empty"] == stats["llm_calls"] >= 2  # every answer counted as empty...
        assert stats["fallback_batches"] == 2  # ...and each iteration measured the random fallback instead
        assert not any("sorry" in p.lower() for p in prompts)
    elif kind == "the same prompt again":
        assert prompts.count("the very same prompt") == 1
        assert stats["rejected_duplicate"] >= 1 and stats["fallback_batches"] >= 1
    elif kind == "a thousand prompts":
        assert all(len(batch) <= 4 for batch in llm_batches(result).values())  # the batch size, not 1000
        assert stats["generated"] == 1 + 4 * (stats["llm_calls"] + stats["fallback_batches"])
    elif kind == "non-text bytes":
        assert stats["llm_empty"] >= 1 and "clean words here" in prompts
    elif kind == "tokenizes to nothing":
        assert stats["rejected_empty"] >= 1 and stats["failed"] == 0
        assert "something measurable" in prompts
    elif kind == "markdown":
        assert "Bold prompt about rivers" in prompts and "Plain prompt about stones" in prompts
        assert not any(mark in p for p in prompts for mark in ("**", "```", "Sure!", "## ", "These prompts"))
    elif kind == "broken JSON":
        assert stats["llm_calls"] >= 2 and stats["measured"] >= 2


# --- Faults during a run ------------------------------------------------------------------------

@pytest.mark.parametrize("then", ["stop", "stall"])
def test_ollama_failing_mid_run_retries_then_switches_to_the_embedded_llm(then, ollama, monkeypatch, caplog, tiny_model_dir, tmp_path):
    server = ollama(models=["standin:latest"], answers=["ollama rivers\nollama stones\nollama clouds"], then=then)
    monkeypatch.setattr(proposer, "LLM_TIMEOUT_S", 1.0)
    waits: list[float] = []
    monkeypatch.setattr(proposer, "time", SimpleNamespace(sleep=waits.append))
    # A stand-in for the embedded LLM (llama.cpp would take minutes here).
    embedded = FakeListChatModel(responses=fresh_answers(10))
    monkeypatch.setattr(embedded_llm_module, "embedded_chat_model", lambda **_: embedded)

    with caplog.at_level(logging.WARNING, logger="neuron_search"):
        result = tiny_search(tiny_model_dir, tmp_path, "ollama:standin", iterations=4).run(progress=False)

    assert result.stop_reason == "ran 4 iterations"
    batches = llm_batches(result)
    assert sorted(batches) == [1, 2, 3]  # no batch lost: the one Ollama failed on came from the fallback
    assert batches[1] == ["ollama rivers", "ollama stones", "ollama clouds"]
    assert not any("ollama" in p for p in batches[2] + batches[3])
    assert waits == [0.5, 1.0]  # bounded retries (3 tries) with backoff
    assert result.stats["llm_errors"] == 1
    if then == "stall":
        assert server.chat_requests == 1 + 3  # and Ollama is not asked again after the switch
    (line,) = [r.getMessage() for r in caplog.records if r.name == "neuron_search"]
    assert "failed 3 times" in line and line.endswith("switching to the embedded LLM for the rest of this run.")


@pytest.mark.parametrize("where", ["tokenizer", "forward pass"])
def test_a_prompt_the_subject_model_cannot_take_is_recorded_as_failed_and_the_batch_goes_on(where, monkeypatch, tiny_model_dir, tmp_path):
    if where == "tokenizer":
        original = SubjectModel.token_ids

        def ids(self, prompt):
            if "BOOM" in prompt:
                raise ValueError("unexpected tokenization")
            return original(self, prompt)

        monkeypatch.setattr(SubjectModel, "token_ids", ids)
    else:
        original = SubjectModel._measure_batch

        def measure_batch(self, prompts, *args):
            if any("BOOM" in p for p in prompts):
                raise RuntimeError("unexpected tokenization: index out of range in self")
            return original(self, prompts, *args)

        monkeypatch.setattr(SubjectModel, "_measure_batch", measure_batch)
    answer = "a calm prompt about rivers\nBOOM goes this prompt\nanother calm prompt about stones"
    result = tiny_search(tiny_model_dir, tmp_path, scripted([answer] + fresh_answers(3))).run(progress=False)

    assert result.stop_reason == "ran 3 iterations"
    (failed,) = [r for r in result.records if r["error"]]
    assert failed["prompt"] == "BOOM goes this prompt" and failed["activation"] is None
    assert "unexpected tokenization" in failed["error"]
    same_batch = [r for r in result.records if r["iteration"] == failed["iteration"] and not r["error"]]
    assert {r["prompt"] for r in same_batch} == {"a calm prompt about rivers", "another calm prompt about stones"}
    assert result.stats["failed"] == 1


def test_a_results_folder_that_cannot_be_written_is_reported_before_the_search(capsys, tiny_model_dir, tmp_path):
    # chmod cannot stop root (the tests run as root); a path under a regular file fails for anyone.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file, not a folder")
    code, out = cli(capsys, *tiny(tiny_model_dir), "--llm", scripted(["unused"]), "--results-dir", str(blocker / "results"))
    assert code == 2
    assert f"Cannot write to the results folder {blocker / 'results'}" in out and "--results-dir" in out


def test_a_disk_that_fills_up_mid_run_stops_with_what_was_saved_and_the_run_resumes(capsys, monkeypatch, tiny_model_dir, tmp_path):
    # Filling a real disk needs a mount; SQLite's own error for a full disk is raised at the third write.
    original = RecordStore.append
    writes = []

    def append(self, *args):
        writes.append(args[0])
        if len(writes) >= 3:
            raise sqlite3.OperationalError("database or disk is full")
        original(self, *args)

    monkeypatch.setattr(RecordStore, "append", append)
    args = tiny(tiny_model_dir, "--llm", scripted(fresh_answers(20)), "--similarity-threshold", "0.99",
                "--results-dir", str(tmp_path), "--run-id", "full")
    code, out = cli(capsys, *args, "--iterations", "4")
    assert code == 2
    rows = store_rows(tmp_path / "full")
    saved = f"The {len(rows)} prompts measured up to iteration 1 are saved in {tmp_path / 'full' / 'records.sqlite'}"
    assert "disk is full" in out and saved in out
    assert f"python run.py --resume full --results-dir {tmp_path}" in out

    monkeypatch.setattr(RecordStore, "append", original)  # space was freed
    code, out = cli(capsys, "--resume", "full", "--results-dir", str(tmp_path), "--quiet")
    assert code == 0, out
    after = store_rows(tmp_path / "full")
    assert after[: len(rows)] == rows and {r[0] for r in after} == set(range(4))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_after_the_batch_in_flight_and_prints_tables_and_the_resume_command(sig, tiny_model_dir, tmp_path):
    process = scripted_run.start(*scripted_run.tiny_args(tiny_model_dir, tmp_path, "signalled", "--iterations", "100000"))
    scripted_run.wait_for_iteration(tmp_path / "signalled" / "records.sqlite", 2, process)
    process.send_signal(sig)
    out, err = process.communicate(timeout=180)

    assert process.returncode == 0, out + err
    assert "Traceback" not in out + err
    text = " ".join(out.split())
    assert "Top 10 prompts" in text and "Bottom 10 prompts" in text and "Statistics" in text
    assert f"Continue with: python run.py --resume signalled --results-dir {tmp_path}" in text
    run_dir = tmp_path / "signalled"
    state, rows = saved_state(run_dir), store_rows(run_dir)
    assert 2 <= state["iteration"] < 100000
    assert state["stats"]["measured"] + state["stats"]["failed"] == len(rows)  # the store holds every finished batch
    assert {r[0] for r in rows} == set(range(state["iteration"]))
    assert integrity(run_dir) == "ok"


class GatedModel(FakeListChatModel):
    """A scripted chat model that answers only once its gate opens: the run stays in flight till then."""

    gate: Any = None

    def _call(self, *args, **kwargs) -> str:
        assert self.gate.wait(120)
        return super()._call(*args, **kwargs)


def test_a_second_process_resuming_a_run_in_flight_is_refused_and_the_store_stays_whole(tiny_model_dir, tmp_path):
    gate = threading.Event()
    llm = proposer.register_chat_model(GatedModel(responses=fresh_answers(10), gate=gate))
    search = tiny_search(tiny_model_dir, tmp_path, llm, run_id="busy", iterations=3)
    first = {}
    runner = threading.Thread(target=lambda: first.update(result=search.run(progress=False)))
    runner.start()
    try:
        for _ in range(1200):  # the seed batch is stored, then the first LLM call waits at the gate
            if store_rows(tmp_path / "busy") or not runner.is_alive():
                break
            time.sleep(0.1)
        second = run_cli("--resume", "busy", "--results-dir", str(tmp_path), "--quiet")
    finally:
        gate.set()
        runner.join(timeout=120)

    assert second.returncode == 2 and "Traceback" not in second.stdout + second.stderr
    assert "Run busy is being run right now, by another process" in " ".join(second.stdout.split())
    result = first["result"]
    assert result.stop_reason == "ran 3 iterations"
    rows = store_rows(tmp_path / "busy")
    assert integrity(tmp_path / "busy") == "ok"
    assert len(rows) == result.stats["measured"] + result.stats["failed"] and {r[0] for r in rows} == {0, 1, 2}


def test_a_batch_in_which_every_prompt_fails_the_same_way_stops_the_run_with_that_error(monkeypatch, capsys, tiny_model_dir, tmp_path):
    calls = []

    def broken(self, prompts, *args):
        calls.append(len(prompts))
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(SubjectModel, "_measure_batch", broken)
    code, out = cli(capsys, *tiny(tiny_model_dir, "--llm", scripted(fresh_answers(5)), "--results-dir", str(tmp_path), "--run-id", "broken"))
    assert code == 2
    assert "Every prompt of iteration 0" in out and "CUDA error: an illegal memory access" in out
    assert "Traceback" not in out
    assert store_rows(tmp_path / "broken") == []  # nothing of the failed batch was stored
    from neuron_search.services.search.seeds import BUILTIN_SEEDS

    # The seed batch, tried in chunks and then prompt by prompt; no LLM batch after it.
    assert sum(calls) == 2 * len(BUILTIN_SEEDS)

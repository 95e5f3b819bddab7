"""The command line end to end, in a subprocess, offline: bundled model, embedded LLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANGSMITH_TRACING": "false", "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_offline_search_on_the_bundled_model_and_embedded_llm(tmp_path):
    done = run_cli(
        "--model", "embedded", "--llm", "embedded", "--strategy", "llm", "--layer", "6", "--neuron", "123",
        "--iterations", "2", "--batch-size", "4", "--results-dir", str(tmp_path), "--quiet", "--no-explain",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Top 10 prompts" in done.stdout and "Bottom 10 prompts" in done.stdout and "Statistics" in done.stdout
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["settings"]["model"] == "embedded" and results["settings"]["neuron"] == 123
    assert results["best"]["activation"] == max(r["activation"] for r in results["top"])
    assert (run_dir / "report.html").stat().st_size > 1000
    assert (run_dir / "records.csv").read_text().count("\n") > 20
    assert str(run_dir) in done.stdout.replace("\n", "")
    assert results["explanation"] is None

    # Explained afterwards, offline, by the embedded LLM: the sentence, its scores and the control's.
    explained = run_cli("explain", run_dir.name, "--results-dir", str(tmp_path))
    assert explained.returncode == 0, explained.stdout + explained.stderr
    final = json.loads((run_dir / "results.json").read_text())["explanation"]
    assert final["explanation"] and final["llm"] == "embedded"
    assert not set(final["held_out"]["high"] + final["held_out"]["low"]) & set(final["shown"])
    assert set(final["scores"]) == {"explanation", "control"}
    assert "What the neuron detects" in explained.stdout and "What the neuron detects" in (run_dir / "report.html").read_text()


def test_help_explains_every_option():
    done = run_cli("--help")
    assert done.returncode == 0
    for option in ("--neuron", "--layer", "--model", "--llm", "--iterations", "--device", "--position",
                   "--similarity-threshold", "--patience", "--min-improvement", "--target", "--time-limit",
                   "--seed-prompts", "--resume", "--list", "--hint", "--hint-file", "--temperature", "--top-k",
                   "--embedder", "--filter-buckets", "--bucket-percentiles", "--max-attempts", "--stats-every"):
        assert option in done.stdout, option


def test_a_neuron_the_model_does_not_have_is_a_clear_error(tmp_path, tiny_model_dir):
    done = run_cli("--model", str(tiny_model_dir), "--layer", "1", "--neuron", "999", "--llm", "embedded",
                   "--results-dir", str(tmp_path), "--quiet")
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert "256 neurons" in done.stdout and "--neuron" in done.stdout


def test_hint_and_hint_file_together_are_refused(tmp_path):
    result = run_cli("--hint", "numbers", "--hint-file", str(tmp_path / "hint.txt"), "--quiet")
    assert result.returncode == 2
    assert "--hint-file: not allowed with argument --hint" in result.stderr

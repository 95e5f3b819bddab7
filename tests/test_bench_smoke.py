"""The benchmarks keep working: each runs with --smoke (tiny sizes, the tiny model, a scripted LLM).

They are not part of what the suite measures; this only checks that each exits cleanly and prints
its markdown table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = [
    "filter_scaling.py",
    "measurement_throughput.py",
    "memory.py",
    "end_to_end.py",
    "search_quality.py",
    "filter_value.py",
    "resume_time.py",
    "concurrency.py",
    "gradient_quality.py",
    "structured_output.py",
    "explanation_quality.py",
    "fluency_cost.py",
    "sweep_throughput.py",
    "llm_speed.py",
    "hypothesis_steering.py",
]


def offline_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANGSMITH_TRACING": "false", "TMPDIR": str(tmp_path)}


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_smoke(script: str, tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) >= 3, done.stdout  # a header, its rule, and at least one row
    assert set(table[1]) <= set("|-: ")


def test_gpu_check_runs_against_the_cpu_where_there_is_no_gpu(tmp_path: Path) -> None:
    """scripts/gpu_check.py is only run for real on a GPU machine; here it compares the CPU with itself."""
    env = offline_env(tmp_path)
    script = BENCH.parent / "scripts" / "gpu_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--prompts", "8", "--iterations", "3", "--folder", str(tmp_path),
         "--sweep-neurons", "2", "--sweep-prompts", "24"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "agreement: OK" in done.stdout and "GPU CHECK PASSED" in done.stdout
    assert "search on cpu: 3 iterations" in done.stdout
    assert "sweep on cpu: 2 neurons x 24 prompts" in done.stdout and "neurons/hour (OK)" in done.stdout

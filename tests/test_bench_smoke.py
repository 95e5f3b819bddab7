"""The benchmarks keep working: each runs with --smoke (tiny sizes, the tiny model, a scripted LLM).

They are not part of what the suite measures; this checks that each exits cleanly, prints its
markdown table, and that a number of its first row (SCRIPTS names the column) is finite and in range.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Each script, the column of its table's first row that must hold a number, and the range that number
# must lie in (prompts a second, seconds, MiB, activations of the tiny model, ...).
POSITIVE = 1e-9
SCRIPTS = {
    "filter_scaling.py": ("this index (ms/candidate)", POSITIVE, 1e4),
    "measurement_throughput.py": ("HF forward (b)", POSITIVE, 1e6),  # prompts a second
    "memory.py": ("RSS (MiB)", 10, 1e6),
    "end_to_end.py": ("prompts / minute", POSITIVE, 1e6),
    "search_quality.py": ("tool: best", -1e3, 1e3),  # an activation
    "filter_value.py": ("best activation", -1e3, 1e3),
    "resume_time.py": ("open the run's services (s)", 0, 600),
    "concurrency.py": ("prompts/s", POSITIVE, 1e6),
    "gradient_quality.py": ("best @", -1e3, 1e3),
    "structured_output.py": ("usable prompts a call (mean)", 0, 100),
    "explanation_quality.py": ("LLM s", 0, 3600),
    "fluency_cost.py": ("prompts/s", POSITIVE, 1e6),
    "sweep_throughput.py": ("neurons / hour", POSITIVE, 1e7),
    "llm_speed.py": ("tokens / s (median)", POSITIVE, 1e5),
    "hypothesis_steering.py": ("best off", -1e3, 1e3),
}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def offline_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANGSMITH_TRACING": "false", "TMPDIR": str(tmp_path)}


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def printed_number(table: list[str], column: str) -> float:
    """The first number in `column` of the table's first row (thousands separators dropped)."""
    header, row = cells(table[0]), cells(table[2])
    index = next((i for i, name in enumerate(header) if column in name), None)
    assert index is not None and index < len(row), f"no column {column!r} in {table[0]!r} / {table[2]!r}"
    found = NUMBER.search(row[index].replace(",", ""))
    assert found, f"no number in {column!r}: {row[index]!r}"
    return float(found.group())


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
    column, low, high = SCRIPTS[script]
    value = printed_number(table, column)
    assert math.isfinite(value) and low <= value <= high, f"{column}: {value} not in [{low}, {high}]\n{done.stdout}"


def test_gpu_check_runs_against_the_cpu_where_there_is_no_gpu(tmp_path: Path) -> None:
    """scripts/gpu_check.py is only run for real on a GPU machine; here it compares the CPU with itself."""
    env = offline_env(tmp_path)
    script = BENCH.parent / "scripts" / "gpu_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--prompts", "8", "--iterations", "3", "--folder", str(tmp_path),
         "--sweep-neurons", "2", "--sweep-prompts", "24", "--width", "128"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "agreement: OK" in done.stdout and "GPU CHECK PASSED" in done.stdout
    assert "search on cpu: 3 iterations" in done.stdout
    assert "sweep on cpu: 2 neurons x 24 prompts" in done.stdout and "neurons/hour (OK)" in done.stdout

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
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_smoke(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANGSMITH_TRACING": "false", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) >= 3, done.stdout  # a header, its rule, and at least one row
    assert set(table[1]) <= set("|-: ")

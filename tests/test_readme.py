"""The README's Python example runs as written (offline: bundled model, embedded LLM)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "NeuronSearch" in block]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "LANGSMITH_TRACING": "false"}
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    activation, _ = done.stdout.splitlines()[0].split(" ", 1)
    assert float(activation) > 0
    assert (tmp_path / "results").is_dir()

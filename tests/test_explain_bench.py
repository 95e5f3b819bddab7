"""bench/evidence_quality.py --smoke: a 120-prompt gradient run on the tiny GPT-2 with a scripted LLM
prints its table, and the numbers in it are the ones it kept."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "evidence_quality.py"


def test_evidence_quality_smoke_prints_its_numbers(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANGSMITH_TRACING": "false", "TMPDIR": str(tmp_path),
           "NEURON_SEARCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--results-dir", str(tmp_path / "ev")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 3 |")]
    assert len(rows) == 1, done.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    kept = json.loads((tmp_path / "ev" / "evidence-quality-3.json").read_text())
    # Themes in the top 10 findings: a count from 1 to 10, the one kept.
    assert 1 <= int(cells[1]) <= 10 and int(cells[1]) == kept["themes_top10"]
    # The held-out real text: top snippets the explainer was not dealt, and ordinary ones.
    high, low = (int(n) for n in cells[2].split(" / "))
    assert high > 0 and low > 0 and (high, low) == (kept["n_high"], kept["n_low"])
    # The token baseline's AUROC, a number in [0, 1], as kept.
    baseline = float(re.match(r"([0-9.]+) \(", cells[3]).group(1))
    assert 0.0 <= baseline <= 1.0 and baseline == round(kept["token_baseline"]["auroc"], 2)
    # The scripted judge answers by position alone, and every sentence is judged on the same shuffled
    # texts: the three balanced accuracies are one number (no log-probabilities, so no AUROC).
    accuracies = {re.search(r"BA ([0-9.]+)", c).group(1) for c in cells[4:7]}
    assert len(accuracies) == 1 and all(c.startswith("–") for c in cells[4:7])
    assert "grounded detection AUROC above the ungrounded on 0 of 1" in done.stdout

"""A run's evidence on the console (`run.py evidence RUN_ID`): rich tables of the tokens the neuron peaks
on and those right before, what it writes (the tokens its output promotes and suppresses) and the
context that matters (each earlier token's effect on the activation at the peak, a line per token).

From results.json's `evidence` block (services/evidence/evidence_block.py), else from the run's
evidence.json alone; no model is loaded. Every token and prompt is shown as `Text`, never as markup,
each token as its repr() so that spaces and newlines show.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from neuron_search.services.errors import UserError
from neuron_search.services.evidence.evidence_block import EVIDENCE_FILE

RESULTS_FILE = "results.json"
MIN_WIDTH = 60  # a table at least this wide: its title stays on one line


def run_evidence_document(run_dir: Path) -> tuple[dict[str, Any], str]:
    """The run's evidence and where it was read: results.json's `evidence` block, else the run's
    evidence.json (the logit effects and the attribution; no peak-token tables). UserError when
    the run has neither."""
    for name in (RESULTS_FILE, EVIDENCE_FILE):
        try:
            document = json.loads((Path(run_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(document, dict):
            continue
        evidence = document.get("evidence") if name == RESULTS_FILE else document
        if isinstance(evidence, dict) and evidence:
            return evidence, name
    raise UserError(
        f"Run {Path(run_dir).name!r} has no evidence yet: neither {RESULTS_FILE} with an `evidence` block nor "
        f"{EVIDENCE_FILE} in {run_dir}. A search writes both when it ends; `python run.py report "
        f"{Path(run_dir).name}` rebuilds {RESULTS_FILE} from its records."
    )


def evidence_renderables(evidence: dict[str, Any]) -> list[RenderableType]:
    """The tables (and the attribution's lines) of an `evidence` block, in the report's order."""
    out: list[RenderableType] = []
    peaks = evidence.get("peak_tokens") or {}
    for key, name in (("top_prompts", "top prompts"), ("real_snippets", "real snippets")):
        table = peaks.get(key)
        if table:
            out += _peak_tables(table, name)
    if peaks and not peaks.get("real_snippets"):
        out.append(Text("No real snippets of this neuron to count: `run.py exemplars` (or a search with --seed-corpus) saves them."))
    out += _logit_tables(evidence.get("logit_effects"))
    out.append(attribution_lines(evidence.get("attribution") or []))
    return out


def _peak_tables(table: dict[str, Any], name: str) -> list[Table]:
    at = Table(title=Text(f"Peak tokens over the {name}"), caption=Text(str(table.get("label", ""))), title_justify="left", min_width=MIN_WIDTH)
    for column in ("token", "count", "mean activation", "max activation"):
        at.add_column(column, justify="left" if column == "token" else "right")
    for row in table.get("at_peak", []):
        at.add_row(Text(repr(row["token"])), str(row["count"]), _num(row.get("mean_activation")), _num(row.get("max_activation")))
    before = Table(title=Text(f"Right before the peak, over the {name}"), title_justify="left", min_width=MIN_WIDTH)
    before.add_column("token")
    before.add_column("count", justify="right")
    for row in table.get("before_peak", []):
        before.add_row(Text(repr(row["token"])), str(row["count"]))
    first = int(table.get("peak_first", 0) or 0)
    if first:
        before.caption = Text(f"{first} peak(s) on the first token, with nothing before it")
    return [at, before]


def _logit_tables(effects: dict[str, Any] | None) -> list[RenderableType]:
    if not effects:
        return [Text("What the neuron writes: not computed for this run (its folder has no evidence.json).")]
    out: list[RenderableType] = []
    for key, title in (("promoted", "Promoted"), ("suppressed", "Suppressed")):
        table = Table(title=Text(f"{title}: the neuron's direct effect on the logits"), title_justify="left", min_width=MIN_WIDTH)
        for column in ("token", "id", "logit per unit"):
            table.add_column(column, justify="left" if column == "token" else "right")
        for item in effects.get(key, []):
            table.add_row(Text(repr(item["token"])), str(item.get("id", "")), _num(item.get("effect")))
        out.append(table)
    out.append(Text(f"{effects.get('method', '')}. Compare values within this neuron: the norms' per-token scales are left out."))
    return out


def attribution_lines(entries: list[dict[str, Any]]) -> RenderableType:
    """The context that matters: per attributed prompt a head line, then one `token:effect` line per
    token before the peak (removal; the replacement in brackets)."""
    title = Text("The context that matters", style="table.title")
    if not entries:
        return Group(title, Text("Not computed for this run (its evidence.json has no attribution)."))
    replacement = next((e.get("replacement_token") for e in entries if e.get("replacement_token") is not None), " the")
    lines: list[RenderableType] = [
        title,
        Text(
            "Each earlier token's effect on the activation at the peak: activation(whole prompt) - activation(without "
            f"the token); in brackets, with the token replaced by {replacement!r}. + helps the neuron fire, - holds it "
            "back; tokens after the peak have no effect (causal attention)."
        ),
    ]
    for entry in entries:
        tokens = [str(t) for t in entry.get("tokens", [])]
        peak = int(entry.get("peak", len(tokens) - 1))
        at = repr(tokens[peak]) if 0 <= peak < len(tokens) else "?"
        lines.append(Text(f"\n{entry.get('source', '')}, activation {_num(entry.get('activation'))} at {at}: {entry.get('prompt', '')}", style="bold"))
        removal, replaced = entry.get("removal") or [], entry.get("replacement") or []
        shown = [(i, removal[i]) for i in range(min(peak, len(removal))) if removal[i] is not None]
        if not shown:
            lines.append(Text("  (nothing before the peak)"))
        for i, effect in shown:
            other = replaced[i] if i < len(replaced) else None
            lines.append(Text(f"  {tokens[i]!r}:{_signed(effect)}" + (f"  ({_signed(other)})" if other is not None else "")))
    return Group(*lines)


def _num(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{number:.4f}" if math.isfinite(number) else "-"


def _signed(value: float) -> str:
    return f"{float(value):+.4f}"

"""The explanation of a run as the report and the final tables show it: the sentence, its scores
beside the control's with their sample sizes, and the hypotheses' timeline (--explain-every).

Everything here reads explanation.json's blocks (services/explain/run_explanation.py); the
sentence and the prompts were written by an LLM, so the HTML escapes them and the terminal shows
them as rich `Text`, never as markup.
"""

from __future__ import annotations

import html
from typing import Any

from rich.table import Table
from rich.text import Text


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _detection_cell(detection: dict[str, Any] | None) -> str:
    """Balanced accuracy (answered of asked; its AUROC where the LLM gave log-probabilities)."""
    if not detection:
        return "–"
    asked = detection["n_high"] + detection["n_low"]
    auroc = detection.get("auroc")
    probabilities = f"; AUROC {_num(auroc)} from log-probabilities" if auroc is not None else ""
    return f"{_num(detection['balanced_accuracy'])} ({detection['n_answered']} of {asked} answered{probabilities})"


def score_rows(final: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(row, explanation, detection on held-out run prompts, detection on real-text snippets ("–"
    without a cached corpus scan), generation AUROC (n fire / n not), mean activation ratio fire /
    not), for the explanation and the control. Detection cells: `_detection_cell`."""
    rows = []
    for name, row in (final.get("scores") or {}).items():
        generation = row["generation"] or {}
        rows.append(
            (
                name,
                row["text"],
                _detection_cell(row["detection"]),
                _detection_cell(row.get("real_text")),
                f"{_num(generation.get('auroc'))} ({generation.get('n_fire', 0)} / {generation.get('n_not', 0)})",
                _num(generation.get("ratio")),
            )
        )
    return rows


HEADERS = (
    "",
    "text",
    "detection: balanced accuracy",
    "detection on real text",
    "generation: AUROC (fire / not)",
    "mean ratio fire / not",
)


def explanation_html(document: dict[str, Any]) -> str:
    """The body of the report's first section ("" when the run has no explanation)."""
    final = document.get("final") or {}
    if not final:
        return ""
    sentence = final.get("explanation") or "(the LLM gave no usable explanation)"
    held = final.get("held_out", {})
    parts = [
        f'<p class="explanation">{_e(sentence)}</p>',
        f'<p class="note">Written by {_e(final.get("llm", "?"))} from {len(final.get("shown", []))} of the run\'s '
        f"{final.get('measured', 0):,} measured prompts; scored on {len(held.get('high', []))} held-out high and "
        f"{len(held.get('low', []))} held-out low prompts it never saw (detection: the LLM, given only the "
        "sentence, says which fire), and on prompts the LLM wrote from the sentence to fire and not to fire, "
        "measured (generation)"
        + (
            f"; and on {len(held['real_high'])} of the neuron's top and {len(held['real_low'])} ordinary real-text "
            "snippets it never saw (detection on real text)"
            if held.get("real_high")
            else ""
        )
        + ". The control row scores a generic sentence the same way: what chance looks like here.</p>",
    ]
    rows = score_rows(final)
    if rows:
        head = "".join(f"<th>{_e(h)}</th>" for h in HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f'<table class="scores"><tr>{head}</tr>{body}</table>')
    return "\n".join(parts)


def hypotheses_html(document: dict[str, Any]) -> str:
    """The body of the hypotheses' timeline section ("" when --explain-every made none)."""
    hypotheses = document.get("hypotheses") or []
    if not hypotheses:
        return ""
    head = "<tr><th>iteration</th><th>hypothesis</th><th>generation AUROC (fire / not)</th><th>mean ratio</th></tr>"
    body = ""
    for h in hypotheses:
        generation = h.get("generation") or {}
        body += (
            f"<tr><td>{h['iteration']}</td><td>{_e(h['explanation'] or '(none)')}</td>"
            f"<td>{_num(generation.get('auroc'))} ({generation.get('n_fire', 0)} / {generation.get('n_not', 0)})</td>"
            f"<td>{_num(generation.get('ratio'))}</td></tr>"
        )
    return (
        '<p class="note">Every --explain-every iterations the records so far were explained, the explanation '
        "scored by generation, and handed to the LLM to test. Dashed lines on the activation chart above mark "
        f"these iterations.</p><table class=\"scores\">{head}{body}</table>"
    )


def explanation_table(final: dict[str, Any]) -> Table:
    """The final tables' explanation block, for the terminal."""
    sentence = final.get("explanation") or "(no usable explanation)"
    table = Table(title=Text(f"What the neuron detects: {sentence}", style="table.title"), title_justify="left")
    for header in HEADERS:
        table.add_column(header)
    for row in score_rows(final):
        table.add_row(*(Text(str(cell)) for cell in row))
    return table

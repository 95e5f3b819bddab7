"""The explanation of a run as the report and the final tables show it: the verdict (does the
sentence beat the control and the token baseline, by how much, on how many texts:
services/explain/verdict.py), the sentence, its scores beside the control's and the baseline's with
their sample sizes, and the hypotheses' timeline (--explain-every).

A sentence that does not beat both is never shown as the answer: the headline says "not better than
the control" (or "... the token baseline"), the sentence is shown only as the LLM's proposal, and the
report leads with the evidence card (`explanation_wins`; themes_html adds the themes the explainer saw).

Everything here reads explanation.json's blocks (services/explain/run_explanation.py); the
sentence and the prompts were written by an LLM, so the HTML escapes them and the terminal shows
them as rich `Text`, never as markup.
"""

from __future__ import annotations

import html
from typing import Any

from rich.table import Table
from rich.text import Text

from neuron_search.services.explain.verdict import Verdict, verdict


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


def verdict_of(final: dict[str, Any]) -> Verdict:
    """The block's verdict as saved, or computed for an explanation.json saved before verdicts were."""
    saved = final.get("verdict")
    return saved if isinstance(saved, dict) and "wins" in saved else verdict(final)


def explanation_wins(document: dict[str, Any]) -> bool:
    """Whether the run's explanation beats the control and the token baseline (False without one)."""
    final = document.get("final") or {}
    return bool(final) and verdict_of(final)["wins"]


def _baseline_cell(score: dict[str, Any] | None) -> str:
    if not score:
        return "–"
    return (
        f"AUROC {_num(score.get('auroc'))} (Pearson {_num(score.get('pearson'))}, Spearman {_num(score.get('spearman'))}; "
        f"{score['n_high']} high / {score['n_low']} low)"
    )


def score_rows(final: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(row, explanation, detection on held-out run prompts, detection on real-text snippets ("–"
    without a cached corpus scan), generation AUROC (n fire / n not), mean activation ratio fire /
    not), for the explanation and the control, then the token baseline (its AUROC and correlations
    on the same held-out texts; no generation). Detection cells: `_detection_cell`."""
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
    baseline = final.get("token_baseline") or {}
    if rows and (baseline.get("run_prompts") or baseline.get("real_text")):
        rows.append(
            ("token baseline", "the highest mean peak activation of its tokens in the peak-token table (others 0)",
             _baseline_cell(baseline.get("run_prompts")), _baseline_cell(baseline.get("real_text")), "–", "–")
        )  # fmt: skip
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
    judged = verdict_of(final)
    if judged["wins"]:
        lead = f'<p class="explanation">{_e(sentence)}</p><p class="verdict">{_e(judged["headline"])}</p>'
    else:
        lead = (
            f'<p class="verdict"><b>{_e(judged["headline"])}</b></p><p class="note">The LLM\'s sentence, not the answer: &ldquo;{_e(sentence)}&rdquo;</p>'
        )
    seen = (
        f"{len(final['themes'])} themes (one prompt each), {len(final.get('real_shown', []))} real snippets, the "
        "peak-token table" + (" and the logit effects" if final.get("logit_effects_shown") else "") + ", "
        if "themes" in final
        else ""
    )
    parts = [
        lead,
        f'<p class="note">Written by {_e(final.get("llm", "?"))} from {seen}{len(final.get("shown", []))} examples '
        f"in all, of the run\'s {final.get('measured', 0):,} measured prompts and the neuron's real text; scored on {len(held.get('high', []))} held-out high and "
        f"{len(held.get('low', []))} held-out low prompts it never saw (detection: the LLM, given only the "
        "sentence, says which fire), and on prompts the LLM wrote from the sentence to fire and not to fire, "
        "measured (generation)"
        + (
            f"; and on {len(held['real_high'])} of the neuron's top and {len(held['real_low'])} ordinary real-text "
            "snippets it never saw (detection on real text)"
            if held.get("real_high")
            else ""
        )
        + ". The control row scores a generic sentence the same way: what chance looks like here; the token "
        "baseline predicts each held-out text from its tokens alone.</p>",
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


def themes_html(document: dict[str, Any]) -> str:
    """The themes the explainer saw (one prompt each, with its variants and range), for the evidence
    card that leads the report when the sentence lost ("" without them)."""
    themes = (document.get("final") or {}).get("themes") or []
    if not themes:
        return ""
    head = "<tr><th>#</th><th>best prompt of the theme</th><th>activation</th><th>peak token</th><th>variants (range)</th></tr>"
    body = "".join(
        f"<tr><td>{i}</td><td>{_e(t['prompt'])}</td><td>{_num(t['activation'], 3)}</td><td>{_e(repr(t['token']))}</td>"
        f"<td>{t['variants']} ({_num(t['low'], 3)} to {_num(t['high'], 3)})</td></tr>"
        for i, t in enumerate(themes, 1)
    )
    return (
        '<div class="evidence"><h3>Themes of the top prompts</h3><p class="note">Near-copies of one prompt are one '
        f'theme; the best of each is shown.</p><table class="scores">{head}{body}</table></div>'
    )


def explanation_table(final: dict[str, Any]) -> Table:
    """The final tables' explanation block, for the terminal: titled with the sentence where it beats
    the control and the token baseline, else with the verdict (the sentence as a row, not the answer)."""
    judged = verdict_of(final)
    title = f"What the neuron detects: {judged['headline']}" if judged["wins"] else f"What the neuron detects: unknown. {judged['headline']}"
    table = Table(title=Text(title, style="table.title"), title_justify="left")
    for header in HEADERS:
        table.add_column(header)
    for row in score_rows(final):
        table.add_row(*(Text(str(cell)) for cell in row))
    return table

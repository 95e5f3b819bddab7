"""The report's evidence block, under the top prompts: the tokens the neuron peaks on (over the top prompts and over its
top real snippets), the context that matters (each earlier token's effect on the activation at the peak, drawn as
a second row of colour under the prompt's tokens) and the tokens its output promotes and suppresses
(services/evidence/).

Every token shown is untrusted text (written by an LLM, taken from real text, or a vocabulary entry
of any model), so each is escaped and drawn as text, never as markup.
"""

from __future__ import annotations

from typing import Any

from neuron_search.services.reports.page_style import escape as _e
from neuron_search.services.reports.page_style import fmt as _fmt
from neuron_search.services.reports.page_style import source_pill
from neuron_search.services.reports.token_colours import attribution_legend, attribution_spans, scale_legend, token_label


def evidence_html(evidence: dict[str, Any] | None) -> str:
    """The evidence as one block (it closes the top prompts' section, whose prompts it summarises),
    "" when there is no evidence at all."""
    if not evidence:
        return ""
    peaks = evidence.get("peak_tokens") or {}
    parts = [_peak_block(peaks.get("top_prompts"), "Top prompts")]
    real = peaks.get("real_snippets")
    parts.append(
        _peak_block(real, "Real snippets")
        if real
        else '<p class="note">No real snippets of this neuron to count: <code>run.py exemplars</code> (or a '
        "search with --seed-corpus) saves them.</p>"
    )
    parts.append(attribution_html(evidence.get("attribution") or []))
    parts.append(_logit_block(evidence.get("logit_effects")))
    body = "\n".join(part for part in parts if part)
    return f'<div class="evidence-card" id="evidence"><h3 class="evidence-title">What the neuron peaks on and writes</h3>{body}</div>'


def _peak_block(table: dict[str, Any] | None, title: str) -> str:
    if not table:
        return ""
    at = "".join(
        f"<tr><th>{token_label(row['token'])}</th><td class=\"num\">{int(row['count'])}</td>"
        f"<td class=\"num\">{_e(_fmt(float(row['mean_activation'])))}</td></tr>"
        for row in table.get("at_peak", [])
    ) or '<tr><td colspan="3" class="empty">none</td></tr>'
    before = "".join(
        f"<tr><th>{token_label(row['token'])}</th><td class=\"num\">{int(row['count'])}</td></tr>"
        for row in table.get("before_peak", [])
    ) or '<tr><td colspan="2" class="empty">none</td></tr>'
    first = int(table.get("peak_first", 0))
    first_note = f" {first} peak{'s' if first != 1 else ''} on the first token, with nothing before it." if first else ""
    return (
        f'<div class="evidence"><h3>{_e(title)}: peak tokens</h3>'
        f'<p class="note">Over {_e(table.get("label", ""))}.{_e(first_note)}</p>'
        '<div class="stats">'
        '<table class="kv peak-tokens"><caption>At the peak</caption><thead><tr><th>token</th><th class="num">count</th>'
        f'<th class="num">mean activation</th></tr></thead><tbody>{at}</tbody></table>'
        '<table class="kv before-peak"><caption>Right before the peak</caption><thead><tr><th>token</th>'
        f'<th class="num">count</th></tr></thead><tbody>{before}</tbody></table>'
        "</div></div>"
    )


def _logit_block(effects: dict[str, Any] | None) -> str:
    if not effects:
        return (
            '<div class="evidence"><h3>What the neuron writes</h3><p class="note">Not computed for this run: its '
            "folder has no evidence.json (a search writes it when it ends, from the model's weights).</p></div>"
        )

    def rows(items: list[dict[str, Any]]) -> str:
        return "".join(
            f"<tr><th>{token_label(item['token'])}</th><td class=\"num\">{_e(_fmt(float(item['effect'])))}</td></tr>"
            for item in items
        ) or '<tr><td colspan="2" class="empty">none</td></tr>'

    norms = ", then ".join(f"{n['name']} ({n['kind']}, {n['module']})" for n in effects.get("norms", [])) or "no norm"
    return (
        '<div class="evidence"><h3>What the neuron writes: its direct effect on the logits</h3>'
        '<div class="stats">'
        '<table class="kv promoted"><caption>Promoted</caption><thead><tr><th>token</th><th class="num">logit per unit</th>'
        f"</tr></thead><tbody>{rows(effects.get('promoted', []))}</tbody></table>"
        '<table class="kv suppressed"><caption>Suppressed</caption><thead><tr><th>token</th><th class="num">logit per unit</th>'
        f"</tr></thead><tbody>{rows(effects.get('suppressed', []))}</tbody></table>"
        "</div>"
        f'<p class="note">{_e(effects.get("method", ""))}; through {_e(norms)}. Compare the values within this '
        "neuron: the norms' per-token scales are left out.</p></div>"
    )


def attribution_html(entries: list[dict[str, Any]]) -> str:
    """The context that matters: each attributed prompt (the top themes' best, then the real snippets)
    as its tokens coloured by activation and, under them, by each token's effect on the activation at
    the peak when removed; "" when there is none. One colour scale for all prompts of each row."""
    entries = [e for e in entries if isinstance(e, dict) and e.get("tokens")]
    if not entries:
        return ""
    value_scale = max((abs(float(v)) for e in entries for v in e.get("values", []) if v == v), default=1.0) or 1.0
    effects = effect_scale(entries)
    replacement = next((e.get("replacement_token") for e in entries if e.get("replacement_token") is not None), " the")
    rows = "".join(_attribution_entry(e, value_scale, effects) for e in entries)
    return (
        '<div class="evidence" id="attribution"><h3>The context that matters</h3>'
        '<p class="note">Each earlier token\'s effect on the activation at the peak, measured by removing the token '
        f"(shown) and by replacing it with {_e(repr(replacement))} (in each token's tooltip): the activation with the "
        "whole prompt minus the activation without it. Tokens after the peak cannot change it (causal attention) "
        "and have no colour.</p>"
        f"{scale_legend(value_scale, 'the largest |activation| of these prompts')}{attribution_legend(effects)}"
        f"{rows}</div>"
    )


def _attribution_entry(entry: dict[str, Any], value_scale: float, effects: float) -> str:
    tokens = [str(t) for t in entry["tokens"]]
    peak = int(entry.get("peak", len(tokens) - 1))
    removal = list(entry.get("removal") or [])
    strongest = sorted(
        ((i, float(x)) for i, x in enumerate(removal) if x is not None and x == x), key=lambda ix: -abs(ix[1])
    )[:3]
    named = ", ".join(f"{token_label(tokens[i])} {_e(('+' if x >= 0 else '−') + _fmt(abs(x)))}" for i, x in strongest)
    spans = attribution_spans(
        tokens, [float(v) for v in entry.get("values", [])], peak, removal, list(entry.get("replacement") or []),
        str(entry.get("replacement_token", "")), value_scale, effects,
    )  # fmt: skip
    head = (
        f'{source_pill(str(entry.get("source", "")))} activation {_e(_fmt(float(entry.get("activation", 0.0))))}'
        f" at {token_label(tokens[peak]) if 0 <= peak < len(tokens) else '?'}"
        + (f" · strongest: {named}" if named else " · nothing before the peak")
    )
    return f'<div class="attr-prompt"><p class="note">{head}</p><div class="attr-row" style="font-family:var(--mono);font-size:13px;white-space:pre-wrap">{spans}</div></div>'


def effect_scale(entries: list[dict[str, Any]]) -> float:
    """The attribution's colour scale: the largest |removal effect| over the entries (1.0 for none)."""
    return max((abs(float(x)) for e in entries for x in e.get("removal") or [] if x is not None and x == x), default=1.0) or 1.0


def attributed_prompts(evidence: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The top prompts that have an attribution, by prompt text (for the top table's second row)."""
    entries = (evidence or {}).get("attribution") or []
    return {e["prompt"]: e for e in entries if isinstance(e, dict) and e.get("source") == "top prompt" and e.get("tokens")}


def attributed_cell(record: dict[str, Any], entry: dict[str, Any], scale: float, effects: float) -> str:
    """A top table's prompt cell with its attribution under its tokens (`attribution_spans`), the
    record's own values in the first row; "" where the entry's tokens are not the record's."""
    if list(record.get("tokens") or []) != list(entry.get("tokens") or []):
        return ""
    return attribution_spans(
        list(record["tokens"]), [float(v) for v in record.get("values") or []], int(entry["peak"]),
        list(entry.get("removal") or []), list(entry.get("replacement") or []), str(entry.get("replacement_token", "")),
        scale, effects,
    )  # fmt: skip


def top_table_legend(evidence: dict[str, Any] | None) -> str:
    """The legend of the top table's second row of colour ("" when no top prompt has one)."""
    attributed = attributed_prompts(evidence)
    if not attributed:
        return ""
    return attribution_legend(effect_scale(list(attributed.values()))).replace(
        "Second row:", "Second row, under the best prompt of each of the top themes:", 1
    )

"""A run's report.html: one self-contained page (no scripts, no external resources; it opens
offline) with the headline, the explanation, the charts, the top and bottom prompts and the
statistics.

Everything in the HTML that comes from a prompt or a token was written by an LLM, so it is escaped.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from neuron_search.services.reports.charts import activation_chart, activation_chart_note, pareto_chart
from neuron_search.services.reports.dataset_reference import DatasetReference, Readable, best_readable, rule_text
from neuron_search.services.reports.evidence_view import (
    attributed_cell,
    attributed_prompts,
    effect_scale,
    evidence_html,
    top_table_legend,
)
from neuron_search.services.reports.explanation_view import explanation_html, explanation_wins, hypotheses_html, themes_html
from neuron_search.services.reports.page_style import CSS, source_pill
from neuron_search.services.reports.page_style import escape as _e
from neuron_search.services.reports.page_style import fmt as _fmt
from neuron_search.services.reports.record_summary import MAX_FRONT, MAX_PLOT_POINTS, Summary
from neuron_search.services.reports.token_colours import scale_legend, token_label, token_spans
from neuron_search.services.storage.record_store import StoredRecord

TITLE_KEYS = ("model", "layer", "neuron", "llm", "position")


def render_html(
    settings: dict,
    statistics: dict,
    buckets: dict,
    summary: Summary,
    dataset: DatasetReference | None = None,
    results_dir: Path | None = None,
    explanation: dict | None = None,
    evidence: dict | None = None,
) -> str:
    """The report page; `results_dir` (the run folder's parent) only words the hint on getting a
    dataset reference when there is none; `explanation` is the run's explanation.json; `evidence`
    results.json's evidence block (services/evidence/evidence_block.py: peak tokens, logit effects)."""
    explanation = explanation or {}
    explained = explanation_html(explanation)
    timeline = hypotheses_html(explanation)
    evidenced = evidence_html(evidence)
    # A sentence that does not beat the control and the token baseline is not the answer: the evidence
    # card (the themes the explainer saw, peak tokens, logit effects) leads the page instead of it.
    card_leads = bool(explained) and not explanation_wins(explanation)
    lead_card = themes_html(explanation) + evidenced if card_leads else ""
    marks = [int(h["iteration"]) for h in explanation.get("hypotheses", [])]
    scale = max(abs(summary.token_min), abs(summary.token_max)) or 1.0
    fluency = []
    if summary.with_xent:
        readable = best_readable(summary, dataset)
        body = pareto_chart(summary, dataset, readable) + _pareto_note(summary, dataset, settings, results_dir)
        fluency = [_section("Activation against cross-entropy", body + _readable_block(readable, dataset), "pareto")]
    sections = [
        _header(settings),
        *([_section("What the evidence shows", lead_card, "evidence-lead")] if lead_card else []),
        *([_section("What the neuron detects", explained, "explanation")] if explained else []),
        _headline(statistics, summary, dataset, _exemplars_hint(settings, results_dir)),
        _section("Activation over the search", activation_chart(summary, marks) + activation_chart_note(summary)),
        *([_section("Hypotheses during the search", timeline, "hypotheses")] if timeline else []),
        *fluency,
        _section(
            f"Top {len(summary.top)} prompts",
            scale_legend(scale) + top_table_legend(evidence) + _prompt_table(summary.top, scale, attributed_prompts(evidence)) + _folded_note(summary.folded[0]) + ("" if lead_card else evidenced),
        ),
        _section(
            f"Bottom {len(summary.bottom)} prompts",
            _prompt_table(summary.bottom, scale) + _folded_note(summary.folded[1]),
        ),
        _section("Statistics", _stats_tables(statistics, buckets, summary)),
    ]
    model, layer, neuron = (settings.get(k, "?") for k in ("model", "layer", "neuron"))
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(f'{model} · layer {layer} · neuron {neuron}')}</title>\n<style>{CSS}</style>\n</head>\n"
    )
    return head + "<body>\n<main>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"


def _folded_note(folded: int) -> str:
    if not folded:
        return ""
    return (
        f'<p class="note">One row per theme: {folded} other prompt{"s are" if folded > 1 else " is"} folded into '
        "the rows. Prompts that share a row's text through its peak token and its activation are one finding "
        "(words after the peak cannot change it), shown in its shortest form; findings that are near-copies of "
        "a row's prompt (the same peak token and a difflib ratio of at least 0.70 over their tokens through the "
        "peak: a word dropped, doubled or swapped before it) are its theme. Variants counts the findings a row "
        "stands for, Range their activations.</p>"
    )


def _section(title: str, body: str, anchor: str | None = None) -> str:
    anchor = anchor or title.split()[0].lower()  # chart: #activation, tables: #top, #bottom, #statistics
    return f'<section id="{_e(anchor)}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _header(settings: dict) -> str:
    chips = "".join(
        f'<span class="chip"><b>{_e(k)}</b> {_e(settings[k])}</span>'
        for k in ("llm", "position")
        if k in settings
    )
    others = [(k, v) for k, v in settings.items() if k not in TITLE_KEYS]
    table = ""
    if others:
        cells = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(_setting(v))}</dd></div>" for k, v in others)
        table = f'<details class="settings" open><summary>Settings</summary><dl>{cells}</dl></details>'
    layer, neuron = _e(settings.get("layer", "?")), _e(settings.get("neuron", "?"))
    return (
        '<header>\n<p class="kicker">Max-activating prompts</p>\n'
        f'<h1>Neuron <span class="mono">L{layer}/N{neuron}</span>'
        f' <span class="model">{_e(settings.get("model", "?"))}</span></h1>\n'
        f'<div class="chips">{chips}</div>\n{table}\n</header>'
    )


def _setting(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "–"
    if value is None or value == "":
        return "–"
    return str(value)


def _exemplars_hint(settings: dict, results_dir: Path | None) -> str:
    """The command that saves this neuron's dataset examples where this run's report finds them."""
    words = ["python", "run.py", "exemplars"]
    for key in ("neuron", "layer", "model"):
        words += [f"--{key}", str(settings.get(key, "?"))]
    for key in ("corpus", "text_column"):  # the search's own corpus, where it named one
        if settings.get(key):
            words += [f"--{key.replace('_', '-')}", str(settings[key])]
    if results_dir is not None and Path(results_dir).resolve() != Path("results").resolve():
        words += ["--results-dir", str(results_dir)]
    return shlex.join(words)


def _headline(statistics: dict, summary: Summary, dataset: DatasetReference | None = None, hint: str = "") -> str:
    best = summary.best
    if best:
        best_note = f"peak at {token_label(best['token'])} · iteration {int(best['iteration'])}"
    else:
        best_note = "nothing measured"
    measured = statistics.get("measured", summary.measured)
    generated, accepted = statistics.get("generated", 0), statistics.get("accepted", 0)
    errors, fallbacks = statistics.get("llm_errors", 0), statistics.get("fallback_batches", 0)
    # (label, value, note as HTML already escaped)
    cards = [
        ("Best activation", _fmt(float(best["activation"])) if best else "–", best_note),
        ("Prompts measured", f"{measured:,}", _e(f"{summary.failed:,} failed · {summary.seen:,} records")),
        ("Accepted rate", f"{statistics['accepted_rate']:.1%}", _e(f"{accepted:,} of {generated:,} candidates")),
        ("LLM calls", f"{statistics.get('llm_calls', 0):,}", _e(f"{errors:,} errors · {statistics.get('mutations', 0):,} mutations · {fallbacks:,} fallback batches")),
    ]
    if dataset:
        cards.insert(1, ("Dataset max", _fmt(dataset.max), _e(_dataset_note(best, dataset))))
    html_cards = "".join(
        f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
        f'<div class="note">{note}</div></div>'
        for label, value, note in cards
    )
    pointer = ""
    if not dataset:
        pointer = f'<p class="note dataset-hint">No dataset max to compare with yet: <code>{_e(hint)}</code></p>'
    cls = "cards with-dataset" if dataset else "cards"
    return f'<section class="{cls}">{html_cards}</section>{pointer}' + _best_prompt(best, dataset)


def _dataset_note(best: StoredRecord | None, dataset: DatasetReference) -> str:
    # A ratio means something only against a positive dataset max.
    ratio = f"best found {float(best['activation']) / dataset.max:.2f}× this · " if best and dataset.max > 0 else ""
    return f"{ratio}top of {dataset.scanned:,} real snippets"


def _best_prompt(best: StoredRecord | None, dataset: DatasetReference | None = None) -> str:
    # The raw text, untokenized, so it can be read and copied as the LLM wrote it.
    if not best:
        return ""
    reference = ""
    if dataset:
        xent = "" if dataset.xent is None else f" · cross-entropy {dataset.xent:.3f}"
        reference = (
            f'<div class="label">Dataset max · top snippet of {_e(dataset.corpus or "the corpus")}{_e(xent)}</div>'
            f'<pre>{_e(dataset.top["prompt"])}</pre>'
        )
    return (
        f'<section class="best-prompt"><div class="label">Best prompt · {source_pill(best["source"])}</div>'
        f'<pre>{_e(best["prompt"])}</pre>{reference}</section>'
    )


def _prompt_table(records: list[StoredRecord], scale: float, attributed: dict[str, dict] | None = None) -> str:
    """The prompts' rows; a prompt in `attributed` (evidence_view.attributed_prompts) gets its
    attribution as a second row of colour under its tokens."""
    if not records:
        return '<p class="empty">No measured prompts.</p>'
    attributed = attributed or {}
    effects = effect_scale(list(attributed.values()))

    def cell(r: StoredRecord) -> str:
        entry = attributed.get(r["prompt"])
        return (attributed_cell(r, entry, scale, effects) if entry else "") or token_spans(r, scale)

    rows = "".join(
        f"<tr><td class=\"rank\">{i}</td><td class=\"num\">{_fmt(float(r['activation']))}</td>"
        f"<td class=\"prompt\">{cell(r)}</td>"
        f"<td class=\"num\">{int(r.get('variants', 1))}</td><td class=\"num\">{_range(r)}</td>"
        f"<td>{source_pill(r['source'])}</td><td class=\"num\">{int(r['iteration'])}</td></tr>"
        for i, r in enumerate(records, start=1)
    )
    return (
        '<table class="prompts"><thead><tr><th>#</th><th class="num">Activation</th><th>Prompt</th>'
        '<th class="num">Variants</th><th class="num">Range</th>'
        f'<th>Source</th><th class="num">Iter.</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _range(record: StoredRecord) -> str:
    """A theme's activation range, lowest to highest; its own activation where it stands alone."""
    low, high = record.get("activation_low"), record.get("activation_high")
    if low is None or high is None or low == high:
        return _fmt(float(record["activation"]))
    return f"{_fmt(float(low))} – {_fmt(float(high))}"


# ---- statistics --------------------------------------------------------------------------------


def _stats_tables(statistics: dict, buckets: dict, summary: Summary) -> str:
    rows = "".join(
        f"<tr><th>{_e(k.replace('_', ' '))}</th><td class=\"num\">{_e(_stat(k, v))}</td></tr>"
        for k, v in statistics.items()
    )
    source_rows = "".join(
        f'<tr><th>{source_pill(s)}</th><td class="num">{n:,}</td></tr>'
        for s, n in summary.by_source.most_common()
    )
    bucket_rows = "".join(
        f'<tr><th>{_e(k)}</th><td class="num">{_e(_stat(k, v))}</td></tr>' for k, v in buckets.items()
    )
    bucket_table = bucket_rows or '<tr><td colspan="2" class="empty">none recorded</td></tr>'
    return (
        '<div class="stats">'
        f'<table class="kv"><caption>Counters</caption>{rows}</table>'
        f'<table class="kv"><caption>Bucket counts</caption>{bucket_table}</table>'
        f'<table class="kv"><caption>Records by source</caption>{source_rows}</table>'
        "</div>"
    )


def _stat(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if key.endswith("_rate") else f"{value:,.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# ---- activation against cross-entropy ----------------------------------------------------------


def _pareto_note(summary: Summary, dataset: DatasetReference | None, settings: dict, results_dir: Path | None) -> str:
    shown = "all drawn"
    if summary.with_xent > MAX_PLOT_POINTS:
        shown = f"showing {len(summary.xent_points()):,} (a uniform sample; the front is always drawn)"
    front = f"The Pareto front holds the {len(summary.front):,} prompts that no other beats on both."
    if summary.front_thinned:
        front = front[:-1] + f" (thinned to at most {MAX_FRONT:,} points, both ends kept)."
    if dataset and dataset.points():
        reference = _e(f"Diamonds: the top {len(dataset.points())} dataset examples of {dataset.scanned:,} real snippets.")
    elif dataset:
        command = _e(_exemplars_hint(settings, results_dir))
        reference = f"The dataset examples were saved without their cross-entropy: <code>{command}</code> again draws them here."
    else:
        reference = "No dataset examples to compare with (see the command under the headline)."
    without = summary.measured - summary.with_xent
    spared = (
        f" The other {without:,} measured prompts have none and are on neither the chart nor the front: in a gradient "
        "run, children of the lead that did not beat it (their cross-entropy is measured only when one does)."
        if without and settings.get("strategy", "llm") != "llm"
        else ""
    )
    return (
        f'<p class="note">{summary.with_xent:,} prompts have a cross-entropy under the subject model (the mean '
        f"next-token loss of their own tokens: lower reads more like real text), {shown}.{_e(spared)} {_e(front)} {reference}</p>"
    )


def _readable_block(readable: Readable | None, dataset: DatasetReference | None) -> str:
    if not readable:
        return ""
    r = readable.record
    return (
        f'<div class="readable"><div class="label">Best readable prompt · {source_pill(r["source"])} · '
        f'activation {_fmt(float(r["activation"]))} · cross-entropy {_fmt(float(r["xent"]))}</div>'
        f'<pre>{_e(r["prompt"])}</pre><p class="note">Chosen as: {_e(rule_text(readable, dataset))}.</p></div>'
    )

"""A neuron's dataset examples on disk: exemplars.json (the data, services/dataset/exemplars.py)
and exemplars.html, a self-contained page (no scripts, no external resources) of the top snippets
with the run report's token colours, in RESULTS_DIR/exemplars/<model>-L<layer>-N<neuron>/."""

from __future__ import annotations

import html
import json
from pathlib import Path

from neuron_search.services.dataset.corpus import MAX_TOKENS
from neuron_search.services.dataset.exemplars import Exemplars, exemplar_folder, exemplars_document
from neuron_search.services.reports.page_style import CSS
from neuron_search.services.search.themes import group_themes
from neuron_search.services.reports.token_colours import scale_legend, token_label, token_spans
from neuron_search.services.storage.files import write_atomic


def write_exemplars(result: Exemplars, results_dir: str | Path) -> dict[str, Path]:
    """exemplars.json and exemplars.html in RESULTS_DIR/exemplars/<model>-L<layer>-N<neuron>/."""
    folder = exemplar_folder(results_dir, result.model, result.layer, result.neuron)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "exemplars.json", "html": folder / "exemplars.html"}
    document = exemplars_document(result)
    # Each replaced only once complete: a report reading exemplars.json never sees half of one.
    write_atomic(paths["json"], json.dumps(document, indent=2, ensure_ascii=False))
    write_atomic(paths["html"], render_html(result, document["records"]))
    return paths


def render_html(result: Exemplars, records: list[dict]) -> str:
    """A self-contained page (no scripts, no external resources) with the run report's token colours."""
    e = html.escape
    scale = max((abs(v) for r in records for v in r["values"]), default=0.0) or 1.0
    # One row a theme: near-copies (two windows of one passage) fold into their best snippet.
    themes = group_themes(records)
    rows = "".join(
        f'<tr><td class="rank">{rank}</td><td class="num">{t["best"]["activation"]:.3f}</td>'
        f'<td class="num">{t["variants"]}</td>'
        f'<td>{token_label(t["best"]["token"])}</td><td class="prompt">{token_spans(t["best"], scale)}</td></tr>'
        for rank, t in enumerate(themes, 1)
    )
    title = f"{result.model} · layer {result.layer} · neuron {result.neuron} · dataset examples"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        '<header>\n<p class="kicker">Dataset examples</p>\n'
        f'<h1>Neuron <span class="mono">L{result.layer}/N{result.neuron}</span> '
        f'<span class="model">{e(result.model)}</span></h1>\n'
        f'<div class="chips"><span class="chip"><b>corpus</b> {e(result.corpus)}</span>'
        f'<span class="chip"><b>snippets scanned</b> {result.scanned:,}</span>'
        f'<span class="chip"><b>snippet length</b> ≤ {MAX_TOKENS} tokens</span></div>\n</header>\n'
        f'<section id="top">\n<h2>Top {len(records)} snippets, in {len(themes)} themes</h2>\n'
        + scale_legend(scale, "the largest |value| on this page")
        + '<table class="prompts"><thead><tr><th>#</th><th class="num">Activation</th><th class="num">Variants</th><th>Peak token</th>'
        f"<th>Snippet</th></tr></thead><tbody>{rows}</tbody></table>\n</section>\n"
        "</main>\n</body>\n</html>\n"
    )

"""The look every report page shares: the stylesheet, the colour of each prompt source, and the two
helpers every page's HTML is written with (escaping and number formatting)."""

from __future__ import annotations

import html
from typing import Any

SOURCES = ("seed", "llm", "mutation", "gradient", "fallback")
SOURCE_COLOURS = {"seed": "#7b61b5", "llm": "#1f7ab8", "mutation": "#2a9d6f", "gradient": "#c2185b", "fallback": "#e08a00"}
OTHER_SOURCE_COLOUR = "#777777"
BEST_COLOUR = "#c0262d"


def escape(value: Any) -> str:
    """Text as HTML, quotes included (safe inside an attribute)."""
    return html.escape(str(value), quote=True)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with `digits` decimals, or a dash for none."""
    return "–" if value is None else f"{value:.{digits}f}"


def source_pill(source: str) -> str:
    """A prompt's source as a small pill in its colour."""
    colour = SOURCE_COLOURS.get(source, OTHER_SOURCE_COLOUR)
    return f'<span class="pill" style="--c:{colour}">{escape(source)}</span>'


CSS = """
:root {
  --fg: #1d2430; --muted: #5f6b7a; --line: #e3e7ee; --bg: #f6f7f9; --card: #fff;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 64px; }
header { margin-bottom: 20px; }
.kicker { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: .08em; font-size: 12px; font-weight: 600; }
h1 { margin: 2px 0 8px; font-size: 30px; line-height: 1.2; }
h1 .model { color: var(--muted); font-weight: 500; font-size: 22px; margin-left: 6px; }
h2 { font-size: 18px; margin: 0 0 12px; }
.mono, code { font-family: var(--mono); }
.chips { display: flex; gap: 8px; flex-wrap: wrap; }
.chip { background: var(--card); border: 1px solid var(--line); border-radius: 999px; padding: 2px 10px; font-size: 13px; }
.chip b { color: var(--muted); font-weight: 600; margin-right: 4px; }
details.settings { margin-top: 12px; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; }
details.settings summary { cursor: pointer; color: var(--muted); font-size: 13px; font-weight: 600; }
details.settings dl { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 2px 24px; margin: 8px 0 4px; font-size: 13px; }
details.settings dl div { display: flex; justify-content: space-between; gap: 12px; border-bottom: 1px dotted var(--line); padding: 2px 0; }
details.settings dt { color: var(--muted); }
details.settings dd { margin: 0; font-family: var(--mono); text-align: right; overflow-wrap: anywhere; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px; margin-bottom: 18px; }
section.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 14px; background: none; border: 0; padding: 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; }
.card .label { color: var(--muted); font-size: 13px; font-weight: 600; }
.card .value { font-size: 28px; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.25; }
.card .note { color: var(--muted); font-size: 12.5px; }
.tokname { background: #fdeee3; border-radius: 3px; padding: 0 3px; white-space: pre-wrap; color: var(--fg); }
svg.chart { width: 100%; height: auto; display: block; font-size: 12px; }
svg .plot-bg { fill: #fbfcfd; }
svg .grid { stroke: #e8ebf0; stroke-width: 1; }
svg .axis { stroke: #8a94a3; stroke-width: 1; }
svg .zero { stroke: #8a94a3; stroke-dasharray: 4 3; }
svg .tick { fill: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
svg .axis-label { fill: var(--fg); font-size: 13px; font-weight: 600; }
svg .dots circle { fill-opacity: .55; }
svg .best { fill: none; stroke-width: 2.2; stroke-linejoin: round; }
svg .legend { fill: var(--fg); font-size: 12.5px; }
svg .diamond { fill: #fff; fill-opacity: .7; stroke-width: 1.6; }
svg .ring { fill: none; stroke-width: 2; }
svg .threshold { stroke: #8a94a3; stroke-width: 1; stroke-dasharray: 5 4; }
svg .threshold-label { fill: var(--muted); font-size: 11px; }
svg .mark-label { fill: var(--fg); font-size: 12px; font-weight: 600; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.readable { margin-top: 12px; border-top: 1px solid var(--line); padding-top: 10px; }
.readable .label { color: var(--muted); font-size: 13px; font-weight: 600; margin-bottom: 4px; }
.readable pre { margin: 0; font: 14px/1.5 var(--mono); white-space: pre-wrap; overflow-wrap: anywhere; }
section.cards.with-dataset { grid-template-columns: repeat(5, 1fr); }
p.note.dataset-hint { margin: -8px 0 12px; }
p.explanation { font-size: 20px; line-height: 1.4; margin: 4px 0 10px; }
table.scores { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
table.scores th, table.scores td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
line.hypothesis { stroke: #8a5a00; stroke-dasharray: 4 3; stroke-width: 1; }
p.note.dataset-hint code { font-size: 12px; }
section.best-prompt pre + .label { margin-top: 10px; }
section.best-prompt { padding: 12px 16px; }
section.best-prompt .label { color: var(--muted); font-size: 13px; font-weight: 600; margin-bottom: 4px; }
section.best-prompt pre { margin: 0; font: 14px/1.5 var(--mono); white-space: pre-wrap; overflow-wrap: anywhere; }
p.note { color: var(--muted); font-size: 12.5px; margin: 6px 0 0; }
.scale { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; font-size: 12.5px; color: var(--muted); margin-bottom: 10px; }
.scale .bar { width: 160px; height: 10px; border-radius: 3px; border: 1px solid var(--line); }
.scale .peak-demo { margin-left: 14px; color: var(--fg); }
table.prompts { width: 100%; border-collapse: collapse; }
table.prompts th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 6px 8px; }
table.prompts td { border-bottom: 1px solid var(--line); padding: 7px 8px; vertical-align: baseline; }
table.prompts tbody tr:hover { background: #fafbfc; }
td.rank { color: var(--muted); width: 2.5em; font-variant-numeric: tabular-nums; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.prompts th.num { text-align: right; }
td.prompt { font-family: var(--mono); font-size: 13.5px; line-height: 1.9; white-space: pre-wrap; overflow-wrap: anywhere; width: 100%; }
.tok { white-space: pre-wrap; border-radius: 2px; padding: 1px 0; }
.tok.peak { outline: 2px solid #1d2430; outline-offset: 0; border-radius: 2px; }
.plain { color: var(--muted); }
.pill { display: inline-block; font-size: 12px; padding: 0 8px; border-radius: 999px; color: var(--c); background: color-mix(in srgb, var(--c) 12%, white); border: 1px solid color-mix(in srgb, var(--c) 35%, white); }
.stats { display: grid; grid-template-columns: repeat(3, 1fr); gap: 24px; align-items: start; }
table.kv { border-collapse: collapse; width: 100%; font-size: 13.5px; }
table.kv caption { text-align: left; font-weight: 600; color: var(--muted); font-size: 12.5px; padding-bottom: 4px; }
table.kv th { text-align: left; font-weight: 400; padding: 3px 0; border-bottom: 1px solid var(--line); }
table.kv td { padding: 3px 0; border-bottom: 1px solid var(--line); }
.empty { color: var(--muted); font-style: italic; }
.evidence-card { margin-top: 18px; border-top: 1px solid var(--line); padding-top: 12px; }
h3.evidence-title { font-size: 16px; margin: 0 0 10px; }
.evidence h3 { font-size: 14px; margin: 0 0 2px; }
.evidence + .evidence, .evidence + p.note { margin-top: 16px; }
.evidence .stats { margin-top: 8px; }
.evidence table.kv th.num { text-align: right; }
@media (max-width: 800px) { section.cards, .stats { grid-template-columns: 1fr 1fr; } }
"""

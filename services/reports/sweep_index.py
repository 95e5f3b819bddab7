"""A sweep's index: index.html (one self-contained page) and index.csv, one row per neuron.

The page holds a sortable table (click a column's head), a filter box over prompts and explanations,
a histogram of the neurons' best activations, and a link to each neuron's report. The filter and
the sort can be given in the address (index.html#q=number&sort=best), so a link says what it shows.
Everything shown that an LLM wrote (prompts, explanations) is escaped, and the script never builds a
CSS selector from the address: a column is found by comparing its data-key, so any fragment is safe.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any

from neuron_search.services.explain.run_explanation import read_explanation
from neuron_search.services.reports.token_colours import scale_legend, token_spans
from neuron_search.services.storage.files import atomic_open, write_atomic
from neuron_search.services.storage.record_store import RecordStore
from neuron_search.services.storage.sweep_folder import StatusBook, neurons_dir, read_plan

CSV_COLUMNS = (
    "neuron", "status", "best", "dataset_max", "ratio", "best_prompt", "explanation", "detection",
    "generation_auroc", "control_auroc", "top_peak_token", "top_promoted_token", "measured", "seconds", "attempts",
    "report", "error",
)  # fmt: skip
HISTOGRAM_BINS = 20


def neuron_rows(folder: Path) -> list[dict[str, Any]]:
    """One dict per neuron of the sweep: its status, best activation and prompt, dataset max,
    explanation and scores, the evidence's top peak token and top promoted token (results.json's
    `evidence`), measured prompts and time (None where a value does not exist yet)."""
    book = StatusBook(folder)
    try:
        statuses = book.all()
    finally:
        book.close()
    rows = []
    for status in statuses:
        run = neurons_dir(folder) / str(status.neuron)
        results = _json(run / "results.json")
        final = read_explanation(run).get("final") or {}
        scores = final.get("scores") or {}
        dataset = (results.get("dataset") or {}).get("max")
        best_record = _best_record(run)
        best = best_record["activation"] if best_record else status.best
        rows.append(
            {
                "neuron": status.neuron,
                "status": status.status,
                "best": best,
                "dataset_max": dataset,
                "ratio": best / dataset if best is not None and dataset else None,
                "best_prompt": best_record["prompt"] if best_record else status.best_prompt,
                "best_record": best_record,
                "explanation": final.get("explanation") or "",
                "detection": _score(scores, "explanation", "detection", "balanced_accuracy"),
                "generation_auroc": _score(scores, "explanation", "generation", "auroc"),
                "control_auroc": _score(scores, "control", "generation", "auroc"),
                **_evidence_tokens(results.get("evidence")),
                "measured": (results.get("records") or {}).get("measured", status.measured),
                "seconds": status.seconds,  # the search's own clock, across resumes
                "attempts": status.attempts,
                "report": f"neurons/{status.neuron}/report.html" if (run / "report.html").is_file() else "",
                "error": status.error,
            }
        )
    return rows


def write_index(folder: Path) -> dict[str, Path]:
    """(Re)write the sweep's index.html and index.csv from its folder."""
    plan = read_plan(folder)
    rows = neuron_rows(folder)
    csv_path = folder / "index.csv"
    with atomic_open(csv_path, newline="") as handle:  # each file whole, or the previous one
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    html_path = folder / "index.html"
    write_atomic(html_path, render_index(plan.sweep_id, plan.layer, plan.settings, rows))
    return {"html": html_path, "csv": csv_path}


def _json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _score(scores: dict, row: str, kind: str, name: str) -> float | None:
    return ((scores.get(row) or {}).get(kind) or {}).get(name)


def _evidence_tokens(evidence: Any) -> dict[str, str | None]:
    """The token the neuron peaks on most often over its top prompts, and the token its output promotes
    most (services/evidence/evidence_block.py's block): None where the run has no such evidence."""
    evidence = evidence if isinstance(evidence, dict) else {}
    at_peak = ((evidence.get("peak_tokens") or {}).get("top_prompts") or {}).get("at_peak") or []
    promoted = (evidence.get("logit_effects") or {}).get("promoted") or []
    return {
        "top_peak_token": at_peak[0].get("token") if at_peak and isinstance(at_peak[0], dict) else None,
        "top_promoted_token": promoted[0].get("token") if promoted and isinstance(promoted[0], dict) else None,
    }


def _best_record(run: Path):
    path = run / "records.sqlite"
    if not path.is_file():
        return None
    store = RecordStore(path)
    try:
        return store.best()
    finally:
        store.close()


# ----------------------------------------------------------------------------------------------
# HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _sort_key(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def render_index(sweep_id: str, layer: int, settings: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    bests = [r["best"] for r in rows if r["best"] is not None]
    scale = max((abs(b) for b in bests), default=1.0) or 1.0
    done = sum(1 for r in rows if r["status"] == "done")
    body = "".join(_row(r, scale) for r in rows)
    head = "".join(
        f'<th data-key="{key}" data-kind="{kind}" title="sort by {_e(label)}">{_e(label)}</th>'
        for key, kind, label in COLUMNS
    )
    title = f"Sweep {sweep_id}: {settings.get('model', '?')} layer {layer}, {len(rows)} neurons"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{_e(title)}</h1>
<p class="note">{done} of {len(rows)} neurons done. Click a column's head to sort; the box filters rows by neuron,
prompt and explanation. The address keeps both (e.g. <code>#q=number&amp;sort=-best</code>).
Each neuron's report has its records, charts and explanation. The same rows are in index.csv.</p>
{_histogram(bests)}
{scale_legend(scale, "the sweep's largest best activation")}
<p><input id="filter" type="search" placeholder="filter: neuron, prompt or explanation" size="48">
<span id="shown" class="note"></span></p>
<table id="neurons"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""


COLUMNS = (
    ("neuron", "num", "neuron"),
    ("status", "text", "status"),
    ("best", "num", "best activation"),
    ("ratio", "num", "÷ dataset max"),
    ("prompt", "text", "best prompt"),
    ("explanation", "text", "explanation"),
    ("score", "num", "generation AUROC (control)"),
    ("peak_token", "text", "top peak token"),
    ("promoted_token", "text", "top promoted token"),
    ("measured", "num", "measured"),
    ("seconds", "num", "time (s)"),
)


def _row(r: dict[str, Any], scale: float) -> str:
    prompt = token_spans(r["best_record"], scale) if r["best_record"] else _e(r["best_prompt"] or "")
    link = f'<a href="{_e(r["report"])}">{r["neuron"]}</a>' if r["report"] else str(r["neuron"])
    ratio = f"{_fmt(r['ratio'], 2)}×" if r["ratio"] is not None else "–"
    dataset = f' title="dataset max {_fmt(r["dataset_max"])}"' if r["dataset_max"] is not None else ""
    score = _fmt(r["generation_auroc"], 2) + (f' <span class="note">({_fmt(r["control_auroc"], 2)})</span>' if r["control_auroc"] is not None else "")
    status = _e(r["status"]) + (f'<div class="note">{_e(r["error"])}</div>' if r["error"] else "")
    search = " ".join(str(x) for x in (r["neuron"], r["best_prompt"] or "", r["explanation"], r["status"])).lower()
    cells = [
        ("neuron", _sort_key(r["neuron"]), link),
        ("status", r["status"], status),
        ("best", _sort_key(r["best"]), _fmt(r["best"])),
        ("ratio", _sort_key(r["ratio"]), f"<span{dataset}>{ratio}</span>"),
        ("prompt", r["best_prompt"] or "", f'<span class="prompt">{prompt}</span>'),
        ("explanation", r["explanation"], _e(r["explanation"]) or "–"),
        ("score", _sort_key(r["generation_auroc"]), score),
        ("peak_token", r.get("top_peak_token") or "", _token_cell(r.get("top_peak_token"))),
        ("promoted_token", r.get("top_promoted_token") or "", _token_cell(r.get("top_promoted_token"))),
        ("measured", _sort_key(r["measured"]), _e(r["measured"] if r["measured"] is not None else "–")),
        ("seconds", _sort_key(r["seconds"]), _fmt(r["seconds"], 0)),
    ]
    tds = "".join(f'<td class="{key}" data-v="{_e(value)}">{shown}</td>' for key, value, shown in cells)
    return f'<tr data-neuron="{r["neuron"]}" data-search="{_e(search)}">{tds}</tr>'


def _token_cell(token: str | None) -> str:
    """A token as the evidence names it: escaped, its spaces kept (as repr would show them), newlines as ↵."""
    if token is None:
        return "–"
    shown = token.replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")
    return f'<code class="token">{_e(shown)}</code>'


def _histogram(values: list[float]) -> str:
    """An SVG histogram of the neurons' best activations."""
    if not values:
        return '<p class="note">No neuron has a measured prompt yet.</p>'
    low, high = min(values), max(values)
    width = (high - low) / HISTOGRAM_BINS or 1.0
    counts = [0] * HISTOGRAM_BINS
    for v in values:
        counts[min(int((v - low) / width), HISTOGRAM_BINS - 1)] += 1
    w, h, pad = 560, 140, 30
    bar = (w - 2 * pad) / HISTOGRAM_BINS
    top = max(counts)
    bars = "".join(
        f'<rect x="{pad + i * bar:.1f}" y="{h - pad - (h - 2 * pad) * c / top:.1f}" width="{bar - 1:.1f}" '
        f'height="{(h - 2 * pad) * c / top:.1f}" fill="#ea580c"><title>{c} neuron(s), best in '
        f"[{_fmt(low + i * width)}, {_fmt(low + (i + 1) * width)})</title></rect>"
        for i, c in enumerate(counts)
        if c
    )
    axis = (
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#555"/>'
        f'<text x="{pad}" y="{h - 10}" font-size="11">{_fmt(low)}</text>'
        f'<text x="{w - pad}" y="{h - 10}" font-size="11" text-anchor="end">{_fmt(high)}</text>'
        f'<text x="{w / 2}" y="{h - 10}" font-size="11" text-anchor="middle">best activation per neuron</text>'
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="11" text-anchor="end">{top}</text>'
    )
    return f'<svg id="histogram" width="{w}" height="{h}" role="img" aria-label="histogram of best activations">{bars}{axis}</svg>'


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}
.note{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:13px;width:100%}
th{cursor:pointer;text-align:left;border-bottom:2px solid #999;padding:4px;background:#f5f5f5;position:sticky;top:0}
th.sorted-asc::after{content:" ▲"} th.sorted-desc::after{content:" ▼"}
td{border-bottom:1px solid #ddd;padding:4px;vertical-align:top}
td.explanation{max-width:320px}
.prompt{font-family:ui-monospace,monospace;white-space:pre-wrap}
.tok{border-radius:2px} .tok.peak{outline:1.5px solid #c0262d}
.scale{display:flex;gap:8px;align-items:center;font-size:12px;color:#555;margin:8px 0}
.scale .bar{display:inline-block;width:120px;height:10px;border:1px solid #ccc}
.mono{font-family:ui-monospace,monospace}
code{background:#f3f3f3;padding:0 3px}
code.token{white-space:pre}
"""

SCRIPT = """
(function(){
  var table=document.getElementById('neurons'), body=table.tBodies[0], box=document.getElementById('filter');
  var rows=Array.prototype.slice.call(body.rows), sort={key:'neuron',desc:false};
  function decode(s){try{return decodeURIComponent(s);}catch(e){return s;}}  // a stray '%' stays as typed
  function params(){var out={};location.hash.replace(/^#/,'').split('&').forEach(function(p){
    var kv=p.split('=');if(kv[0])out[decode(kv[0])]=decode(kv[1]||'');});return out;}
  var heads=Array.prototype.slice.call(table.tHead.rows[0].cells);
  function column(key){for(var i=0;i<heads.length;i++){if(heads[i].getAttribute('data-key')===key)return i;}return -1;}
  function cell(row,i){return row.cells[i].getAttribute('data-v');}
  function apply(){
    var q=box.value.trim().toLowerCase(), shown=0, i=column(sort.key);
    var numeric=heads[i].getAttribute('data-kind')==='num';
    rows.sort(function(a,b){var x=cell(a,i),y=cell(b,i);
      if(x===''&&y!=='')return 1; if(y===''&&x!=='')return -1;
      var c=numeric?(parseFloat(x)-parseFloat(y)):x.localeCompare(y); return sort.desc?-c:c;});
    rows.forEach(function(r){var hit=!q||r.getAttribute('data-search').indexOf(q)>=0;
      if(hit){r.removeAttribute('hidden');shown++;}else{r.setAttribute('hidden','');} body.appendChild(r);});
    heads.forEach(function(c){
      c.className=c.getAttribute('data-key')===sort.key?(sort.desc?'sorted-desc':'sorted-asc'):'';});
    document.getElementById('shown').textContent=shown+' of '+rows.length+' neurons shown';
    var h='q='+encodeURIComponent(box.value)+'&sort='+(sort.desc?'-':'')+sort.key;
    if(location.hash!=='#'+h)history.replaceState(null,'','#'+h);
  }
  var p=params(); if(p.q)box.value=p.q;
  if(p.sort){sort.desc=p.sort.charAt(0)==='-';sort.key=p.sort.replace(/^-/,'');}
  if(column(sort.key)<0)sort={key:'neuron',desc:false};
  box.addEventListener('input',apply);
  heads.forEach(function(c){c.addEventListener('click',function(){
    var k=c.getAttribute('data-key'); sort={key:k,desc:sort.key===k?!sort.desc:c.getAttribute('data-kind')==='num'}; apply();});});
  apply();
})();
"""

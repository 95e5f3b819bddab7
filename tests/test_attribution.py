"""The context that matters (issue 35, item 3): each earlier token's effect on the activation at the
peak, by removal and by replacement, checked against forward passes of its own; in evidence.json,
results.json, the report (escaped) and `run.py evidence`; the sweep index's evidence columns."""

from __future__ import annotations

import html
import json

import pytest
import torch

from neuron_search.services.evidence.attribution import AFTER_PEAK, PRIMARY, attribution, neutral_token
from neuron_search.services.model.subject_model import SubjectModel

PROMPTS = (
    "The cat sat on the mat (and the dog) slept.",
    "Paragraph 4 says that the cat (4) sat on mat number 28 today.",
    "What is the capital? 1, 2, 4, 8, 16 and the quick brown fox.",
)
HOSTILE = '<img src=x onerror="alert(1)">&amp;'


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> SubjectModel:
    return SubjectModel.load(str(tiny_model_dir), "cpu")


def neuron_at(subject: SubjectModel, ids: list[int], layer: int, neuron: int) -> torch.Tensor:
    """The neuron at each text token of one unpadded forward pass of BOS + ids, run by the bridge itself."""
    seen: list[torch.Tensor] = []
    tokens = torch.tensor([subject._with_bos(ids)])
    hook = (f"blocks.{layer}.mlp.hook_post", lambda act, hook: seen.append(act[0, :, neuron].detach().clone()))
    with torch.inference_mode():
        subject.bridge.run_with_hooks(tokens, fwd_hooks=[hook])
    return seen[0][len(tokens[0]) - len(ids) :]


def check_against_forward_passes(subject: SubjectModel, prompt: str, layer: int, neuron: int, **options) -> dict:
    found = attribution(subject, prompt, layer, neuron, **options)
    ids = subject.token_ids(prompt)
    full = neuron_at(subject, ids, layer, neuron)
    peak = found["peak"]
    assert peak == int(torch.argmax(full)) and found["activation"] == pytest.approx(float(full[peak]), abs=1e-4)
    assert found["tokens"] == [subject.token_texts[t] for t in ids] and len(found["values"]) == len(ids)
    neutral = neutral_token(subject)
    assert found["replacement_token"] == subject.token_texts[neutral]
    for i in range(peak):
        without = neuron_at(subject, ids[:i] + ids[i + 1 :], layer, neuron)[peak - 1]  # the whole prompt, without token i
        assert found["removal"][i] == pytest.approx(float(full[peak] - without), abs=1e-4)
        swapped = neuron_at(subject, ids[:i] + [neutral] + ids[i + 1 :], layer, neuron)[peak]
        assert found["replacement"][i] == pytest.approx(float(full[peak] - swapped), abs=1e-4)
    assert found["removal"][peak:] == [None] * (len(ids) - peak) and found["replacement"][peak:] == [None] * (len(ids) - peak)
    assert found["primary"] == PRIMARY == "removal" and found["after_peak"] == AFTER_PEAK
    return found


def test_each_effect_equals_a_forward_pass_without_the_token_or_with_it_replaced(tiny):
    peaks = [check_against_forward_passes(tiny, prompt, 1, 3)["peak"] for prompt in PROMPTS]
    assert max(peaks) >= 3  # some prompt has several tokens before its peak to check


def test_the_same_effects_whatever_the_batch(tiny):
    reference = attribution(tiny, PROMPTS[0], 1, 3)
    for batch_size in (1, 3, 7):
        other = attribution(tiny, PROMPTS[0], 1, 3, batch_size=batch_size)
        assert other["peak"] == reference["peak"]
        for kind in ("removal", "replacement"):
            assert [None if e is None else round(e, 4) for e in other[kind]] == [None if e is None else round(e, 4) for e in reference[kind]]


def test_tokens_after_the_peak_have_no_effect_and_last_reads_the_last_token(tiny):
    """Under causal attention a token after the peak cannot move it: None, and a pass with those tokens
    changed agrees; with position "last" the peak is the last token and every earlier one has an effect."""
    found = max((attribution(tiny, p, 1, 3) for p in PROMPTS), key=lambda a: len(a["tokens"]) - a["peak"])
    ids = tiny.token_ids(found["prompt"])
    peak = found["peak"]
    assert peak < len(ids) - 1  # some token after the peak
    changed = ids[: peak + 1] + [neutral_token(tiny)] * (len(ids) - peak - 1)
    assert float(neuron_at(tiny, changed, 1, 3)[peak]) == pytest.approx(found["activation"], abs=1e-5)
    assert all(e is None for e in found["removal"][peak:])
    last = attribution(tiny, found["prompt"], 1, 3, position="last")
    assert last["peak"] == len(ids) - 1 and all(e is not None for e in last["removal"][:-1]) and last["removal"][-1] is None


def test_removal_and_replacement_on_the_bundled_gemma(gemma):
    found = check_against_forward_passes(gemma, "Return a file descriptor (Unix) or handle", 9, 840)
    assert gemma.token_texts[neutral_token(gemma)] == " the" and found["tokens"][found["peak"]] == " ("


# ---- a run's evidence.json, results.json, report, `run.py evidence` -----------------------------


def test_a_run_keeps_the_attribution_of_its_top_themes_and_real_snippets(tiny_model_dir, tmp_path, capsys):
    from neuron_search.cli.main import main
    from neuron_search.services.dataset.exemplars import exemplar_folder
    from neuron_search.testing.helpers import tiny_gradient_search

    tiny = SubjectModel.load(str(tiny_model_dir), "cpu")
    snippets = tiny.measure([f"Real text {HOSTILE} number {i} (here)." for i in range(3)], 1, 3)
    folder = exemplar_folder(tmp_path, str(tiny_model_dir), 1, 3)
    folder.mkdir(parents=True)
    records = [{k: m[k] for k in ("prompt", "activation", "peak", "tokens", "values")} for m in snippets]
    (folder / "exemplars.json").write_text(json.dumps({"model": str(tiny_model_dir), "layer": 1, "neuron": 3, "corpus": "c", "snippets_scanned": 3, "records": records}))

    search = tiny_gradient_search(tiny_model_dir, tmp_path, "attr")
    result = search.run(iterations=2, explain=False, progress=False)
    saved = json.loads((result.run_dir / "evidence.json").read_text())
    entries = json.loads((result.run_dir / "results.json").read_text())["evidence"]["attribution"]
    assert entries == saved["attribution"] and result.evidence["attribution"] == entries
    sources = [e["source"] for e in entries]
    assert sources.count("real snippet") == 3 and 1 <= sources.count("top prompt") <= 5
    assert sources == sorted(sources, key=lambda s: s != "top prompt")  # top prompts first
    best = result.top(1)[0]
    assert entries[0]["prompt"] == best["prompt"] and entries[0]["activation"] == pytest.approx(best["activation"], abs=1e-4)
    for entry in entries:  # each as attribution() measures it on its own
        again = attribution(tiny, entry["prompt"], 1, 3, source=entry["source"])
        assert entry["peak"] == again["peak"] and entry["removal"] == pytest.approx(again["removal"], abs=1e-4)

    page = (result.run_dir / "report.html").read_text()
    card = page.split('id="attribution"', 1)[1].split("</section>", 1)[0]
    assert card.count('class="attr-row"') == len(entries) and "<img" not in page
    top_table = page.split('<section id="top">', 1)[1].split("</table>", 1)[0]
    assert "Second row, under the best prompt of each of the top themes" in top_table  # its legend
    attributed_rows = [row for row in top_table.split("<tr>")[2:] if 'class="attr-col"' in row]
    assert len(attributed_rows) == sources.count("top prompt")  # their second row of colour, in the top table too
    for entry in entries:  # every token, escaped, in its column
        for token in entry["tokens"]:
            assert f">{html.escape(token.replace(chr(10), '↵'), quote=True)}</span>" in card

    capsys.readouterr()
    assert main(["evidence", "attr", "--results-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    for title in ("Peak tokens", "Right before the peak", "Promoted", "Suppressed", "The context that matters"):
        assert title in shown
    top_token = entries[0]["tokens"][max((i for i, e in enumerate(entries[0]["removal"]) if e is not None), key=lambda i: abs(entries[0]["removal"][i]))]
    assert repr(top_token) in shown
    assert main(["evidence", "attr", "--results-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result.evidence


# ---- the sweep's index -----------------------------------------------------------------------------


def test_the_sweep_index_has_the_top_peak_and_promoted_token_of_each_neuron(tmp_path, monkeypatch):
    import csv
    from types import SimpleNamespace

    from neuron_search.services.reports import sweep_index

    statuses = [
        SimpleNamespace(neuron=n, status="done", best=1.0, best_prompt="p", measured=4, seconds=1.0, attempts=1, error="")
        for n in (0, 1)
    ]
    monkeypatch.setattr(sweep_index, "StatusBook", lambda folder: SimpleNamespace(all=lambda: statuses, close=lambda: None))
    monkeypatch.setattr(sweep_index, "read_plan", lambda folder: SimpleNamespace(sweep_id="s", layer=1, settings={"model": "m"}))
    evidence = {
        "peak_tokens": {"top_prompts": {"at_peak": [{"token": HOSTILE, "count": 3}, {"token": " b", "count": 1}]}},
        "logit_effects": {"promoted": [{"token": " (", "id": 7, "effect": 1.0}, {"token": "x", "id": 8, "effect": 0.5}]},
    }
    neuron = sweep_index.neurons_dir(tmp_path) / "0"
    neuron.mkdir(parents=True)
    (neuron / "results.json").write_text(json.dumps({"evidence": evidence}))  # neuron 1 has no results yet

    rows = sweep_index.neuron_rows(tmp_path)
    assert [(r["top_peak_token"], r["top_promoted_token"]) for r in rows] == [(HOSTILE, " ("), (None, None)]
    paths = sweep_index.write_index(tmp_path)
    page = paths["html"].read_text()
    assert ">top peak token</th>" in page and ">top promoted token</th>" in page
    assert HOSTILE not in page and f'<code class="token">{html.escape(HOSTILE, quote=True)}</code>' in page
    assert '<code class="token"> (</code>' in page
    with open(paths["csv"], newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["top_peak_token"], r["top_promoted_token"]) for r in table] == [(HOSTILE, " ("), ("", "")]

"""Evidence beside the prompts (issue 35, items 2 and 4): the tokens a neuron peaks on, counted from its
records, and the tokens its output promotes and suppresses, read from the weights; in results.json,
the report page and the API."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from neuron_search.testing.helpers import tiny_gradient_search
from neuron_search.services.evidence.evidence_block import EVIDENCE_FILE, evidence_block
from neuron_search.services.evidence.logit_effects import effect_vector, logit_effects
from neuron_search.services.evidence.peak_tokens import peak_table
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.reports.result_files import write_results
from neuron_search.services.storage.record_store import StoredRecord
from neuron_search.testing.tiny_model import build_tiny_gpt2

HOSTILE = '<img src=x onerror="alert(1)">&amp;'  # a token is untrusted text, never markup


def record(tokens: list[str], values: list[float], peak: int | None, activation: float | None = None, **extra) -> dict:
    """A stored record as the record store returns it."""
    best = values[peak] if peak is not None else max(values)
    return StoredRecord(
        iteration=1, slot=0, source="gradient", prompt="".join(tokens), activation=best if activation is None else activation,
        token=tokens[peak] if peak is not None else extra.pop("token"), tokens=tokens, values=values, error="", xent=None,
        peak=peak,
    )  # fmt: skip


HAND_BUILT = [
    record(["The", " cat", " ("], [0.1, 0.2, 2.0], 2),
    record(["A", " dog", " ("], [0.3, 0.1, 1.0], 2),
    record([" (", "x"], [3.0, 0.5], 0),  # peaks on its first token: nothing before it
    record(["x", " cat", "!"], [0.1, 0.2, 0.5], 2),
    {**record(["gone"], [0.0], 0), "activation": None, "error": "failed"},  # failed: not counted
    record(["y", " ("], [0.1, 4.0], None, token=" ("),  # stored before peaks were kept: found by its token
]


# ---- peak tokens ------------------------------------------------------------------------------


def test_peak_tokens_count_the_peaks_their_mean_activation_and_the_token_before():
    table = peak_table(HAND_BUILT, "hand-built")
    assert table["records"] == 5 and table["peak_first"] == 1 and table["label"] == "hand-built"
    assert table["at_peak"] == [
        {"token": " (", "count": 4, "mean_activation": pytest.approx(2.5), "max_activation": 4.0},
        {"token": "!", "count": 1, "mean_activation": 0.5, "max_activation": 0.5},
    ]
    assert table["before_peak"] == [{"token": " cat", "count": 2}, {"token": " dog", "count": 1}, {"token": "y", "count": 1}]
    short = peak_table(HAND_BUILT, "hand-built", rows=1)
    assert [r["token"] for r in short["at_peak"]] == [" ("] and [r["token"] for r in short["before_peak"]] == [" cat"]


def test_the_evidence_block_labels_the_top_prompts_and_the_real_snippets_apart():
    dataset = {"corpus": "a corpus", "snippets_scanned": 500, "records": HAND_BUILT[:2]}
    saved = {"logit_effects": {"promoted": []}, "real_snippets": {"corpus": "c", "scanned": 9, "records": HAND_BUILT[3:4]}}
    block = evidence_block(HAND_BUILT[2:4], dataset, saved)
    top, real = block["peak_tokens"]["top_prompts"], block["peak_tokens"]["real_snippets"]
    assert [r["token"] for r in top["at_peak"]] == [" (", "!"] and "top 2 prompts" in top["label"]
    assert real["records"] == 2 and real["at_peak"][0]["count"] == 2 and "real snippets of 500 snippets of a corpus" in real["label"]
    assert block["logit_effects"] == {"promoted": []}
    # Without exemplars.json, the snippets measured from a cached scan when the search ended.
    fallback = evidence_block([], None, saved)["peak_tokens"]["real_snippets"]
    assert fallback["records"] == 1 and fallback["at_peak"][0]["token"] == "!"
    assert evidence_block([], None, {})["peak_tokens"]["real_snippets"] is None
    assert evidence_block([], None, None)["logit_effects"] is None


# ---- logit effects ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """The tiny GPT-2 with a final LayerNorm whose weight and bias are not 1 and 0, so a normalisation
    that forgets either the gain or the centring gives other numbers."""
    folder = build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-ln"), seed=3)
    path = folder / "model.safetensors"
    weights = load_file(path)
    generator = torch.Generator().manual_seed(7)
    weights["transformer.ln_f.weight"] = torch.rand(weights["transformer.ln_f.weight"].shape, generator=generator) * 3 - 1
    weights["transformer.ln_f.bias"] = torch.randn(weights["transformer.ln_f.bias"].shape, generator=generator)
    save_file(weights, path, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def gpt2(gpt2_folder) -> SubjectModel:
    return SubjectModel.load(str(gpt2_folder), "cpu")


def tensors(folder: Path, *names: str) -> list[torch.Tensor]:
    """Weights read straight from the model's file, as float32: not through the bridge."""
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        return [weights.get_tensor(name).float() for name in names]


def expected_gpt2(folder: Path, layer: int, neuron: int) -> torch.Tensor:
    c_proj, ln_f, wte = tensors(folder, f"transformer.h.{layer}.mlp.c_proj.weight", "transformer.ln_f.weight", "transformer.wte.weight")
    direction = c_proj[neuron]  # Conv1D: [d_mlp, d_model]
    direction = (direction - direction.mean()) * ln_f  # LayerNorm: centred, times its weight
    return wte @ direction  # W_U is W_E transposed (tied)


def expected_gemma(layer: int, neuron: int) -> torch.Tensor:
    from neuron_search.services.model.bundled import embedded_subject_folder

    down, post, final, embed = tensors(
        embedded_subject_folder(), f"model.layers.{layer}.mlp.down_proj.weight",
        f"model.layers.{layer}.post_feedforward_layernorm.weight", "model.norm.weight", "model.embed_tokens.weight",
    )  # fmt: skip
    direction = down[:, neuron] * (1 + post) * (1 + final)  # Linear: [d_model, d_mlp]; Gemma's RMSNorm: 1 + weight
    return embed @ direction


def assert_top_and_bottom(found: dict, expected: torch.Tensor, k: int = 10) -> None:
    order = torch.argsort(expected, descending=True)
    assert [e["id"] for e in found["promoted"]] == order[:k].tolist()
    assert [e["id"] for e in found["suppressed"]] == order.flip(0)[:k].tolist()
    for entry in found["promoted"] + found["suppressed"]:
        assert entry["effect"] == pytest.approx(float(expected[entry["id"]]), rel=1e-4, abs=1e-6)


def test_logit_effects_are_w_out_through_the_final_layernorm_times_w_u_on_gpt2(gpt2, gpt2_folder):
    vector, steps = effect_vector(gpt2, 1, 5)
    expected = expected_gpt2(gpt2_folder, 1, 5)
    assert torch.allclose(vector, expected, rtol=1e-4, atol=1e-6)
    assert [(s["name"], s["kind"]) for s in steps] == [("ln_final", "LayerNorm")]
    found = logit_effects(gpt2, 1, 5)
    assert_top_and_bottom(found, expected)
    assert found["promoted"][0]["token"] == gpt2.token_texts[found["promoted"][0]["id"]]
    assert len(logit_effects(gpt2, 0, 2, k=3)["suppressed"]) == 3


def test_logit_effects_go_through_gemmas_post_mlp_and_final_rmsnorms(gemma):
    vector, steps = effect_vector(gemma, 9, 840)
    expected = expected_gemma(9, 840)
    assert torch.allclose(vector, expected, rtol=1e-4, atol=1e-4)
    assert [(s["name"], s["kind"], s["module"]) for s in steps] == [
        ("blocks.9.ln2_post", "RMSNorm", "Gemma3RMSNorm"), ("ln_final", "RMSNorm", "Gemma3RMSNorm"),
    ]  # fmt: skip
    assert_top_and_bottom(logit_effects(gemma, 9, 840), expected)


@pytest.mark.parametrize("which", ["gpt2", "gemma"])
def test_the_weights_read_are_those_a_forward_pass_uses(which, request):
    """W_out: the MLP's output is hook_post @ W_out (+ b_out). The norms and W_U: a forward pass whose
    MLP output is W_out[n] alone, carried straight to the final norm, moves the logits (from those of an
    empty residual stream) along the effect vector, scaled by the norms' per-token scales only."""
    subject: SubjectModel = request.getfixturevalue(which)
    layer, neuron = (1, 5) if which == "gpt2" else (9, 840)
    bridge = subject.bridge
    tokens = torch.tensor([subject._with_bos(subject.token_ids("The cat sat on the mat"))])
    seen: dict[str, torch.Tensor] = {}
    keep = [
        (f"blocks.{layer}.mlp.{h}", lambda x, hook, h=h: seen.__setitem__(h, x.detach().clone())) for h in ("hook_post", "hook_out")
    ]
    with torch.inference_mode():
        bridge.run_with_hooks(tokens, fwd_hooks=keep)
        w_out = bridge.blocks[layer].mlp.W_out
        b_out = getattr(bridge.blocks[layer].mlp, "b_out", None)
        written = seen["hook_post"] @ w_out + (0 if b_out is None else b_out)
        assert torch.allclose(written, seen["hook_out"], rtol=1e-4, atol=1e-4)

        direction = w_out[neuron]
        post = getattr(bridge.blocks[layer], "ln2_post", None)
        if post is not None:  # the block's post-MLP norm, run by the bridge itself on W_out[n] alone
            got = []
            bridge.run_with_hooks(tokens[:, :1], fwd_hooks=[
                (f"blocks.{layer}.ln2_post.hook_in", lambda x, hook: direction.expand_as(x).clone()),
                (f"blocks.{layer}.ln2_post.hook_out", lambda x, hook: got.append(x[0, 0].clone())),
            ])  # fmt: skip
            direction = got[0]

        def logits_with_residual(residual: torch.Tensor) -> torch.Tensor:
            replace = ("ln_final.hook_in", lambda x, hook: residual.expand_as(x).clone())
            return bridge.run_with_hooks(tokens[:, :1], fwd_hooks=[replace])[0, 0]

        moved = logits_with_residual(direction) - logits_with_residual(torch.zeros_like(direction))
    vector, _ = effect_vector(subject, layer, neuron)
    scale = float(moved @ vector / (vector @ vector))
    assert scale > 0 and torch.allclose(moved, scale * vector, rtol=1e-3, atol=1e-3 * float(moved.abs().max()))


# ---- a run's results.json, report and API -----------------------------------------------------


def evidence_of(page: str) -> str:
    """The report's evidence block: the end of the top prompts' section."""
    return page.split('<div class="evidence-card" id="evidence">', 1)[1].split("</section>", 1)[0]


def test_a_gradient_runs_results_hold_both_evidence_fields(tiny_model_dir, tmp_path, monkeypatch):
    """A tiny gradient run's results.json holds the top prompts' peak tokens and the logit effects (with
    a layer scan cached and no exemplars.json: no real-snippet table, see below)."""
    import neuron_search.services.dataset.exemplars as exemplars_module
    from neuron_search.services.dataset.corpus import corpus_source
    from neuron_search.services.runtime import subject_model

    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i} says that the cat ({i}) sat on mat number {i * 7}." for i in range(30)))
    monkeypatch.setattr(exemplars_module, "corpus_source", lambda path=None: corpus_source(corpus if path is None else path))
    subject = subject_model(str(tiny_model_dir), "cpu")
    snippets, _ = exemplars_module.layer_scan(subject, 1, exemplars_module.corpus_source(None))

    search = tiny_gradient_search(tiny_model_dir, tmp_path, "ev")
    result = search.run(iterations=2, explain=False, progress=False)
    results = json.loads((result.run_dir / "results.json").read_text())
    evidence = results["evidence"]
    assert result.evidence == evidence and (result.run_dir / EVIDENCE_FILE).is_file()

    top = evidence["peak_tokens"]["top_prompts"]
    assert top["records"] == len(results["top"]) > 0
    counts: dict[str, int] = {}
    for brief in results["top"]:  # each top prompt's peak token, as results.json's top table names it
        counts[brief["token"]] = counts.get(brief["token"], 0) + 1
    rows = [(r["token"], r["count"]) for r in top["at_peak"]]
    assert len(rows) == min(10, len(counts)) and all(counts[token] == count for token, count in rows)
    assert [count for _, count in rows] == sorted(counts.values(), reverse=True)[: len(rows)]

    # Measuring the cached scan's top snippets when a search ends is off (services/evidence/run_evidence.py:
    # it raised a run's peak memory, tests/test_memory.py), so without exemplars.json there are none.
    assert evidence["peak_tokens"]["real_snippets"] is None and len(snippets) > 0

    effects = evidence["logit_effects"]
    direct = logit_effects(subject, 1, 3)
    assert [e["id"] for e in effects["promoted"]] == [e["id"] for e in direct["promoted"]] and len(effects["promoted"]) == 10
    assert [e["id"] for e in effects["suppressed"]] == [e["id"] for e in direct["suppressed"]]

    page = (result.run_dir / "report.html").read_text()
    section = evidence_of(page)
    assert html.escape(direct["promoted"][0]["token"].replace("\n", "↵"), quote=True) in section
    assert "Real snippets: peak tokens" not in section and "Top prompts: peak tokens" in section


def test_the_report_shows_the_evidence_with_every_token_escaped(tmp_path):
    records = [
        record(["Say", HOSTILE], [0.1, 2.0], 1),
        record(["Then", " <b>", HOSTILE], [0.1, 0.3, 1.5], 2),
        record(["<script>", "x"], [0.9, 0.2], 0),
    ]
    dataset = {"model": "gpt2", "layer": 9, "neuron": 840, "corpus": "c", "snippets_scanned": 40,
               "records": [{**records[0], "prompt": "Say it"}]}  # fmt: skip
    saved = {"logit_effects": {
        "method": "W_out[n] & W_U <i>", "norms": [{"name": "ln_final", "kind": "LayerNorm", "module": "LayerNorm"}],
        "promoted": [{"token": HOSTILE, "id": 7, "effect": 1.25}], "suppressed": [{"token": "</td><td>", "id": 8, "effect": -0.5}],
    }}  # fmt: skip
    paths = write_results(
        tmp_path, {"model": "gpt2", "layer": 9, "neuron": 840}, {}, iter(records), dataset=dataset, evidence=saved
    )
    page = paths["html"].read_text()
    section = evidence_of(page)
    for raw in (HOSTILE, "<script>", " <b>", "</td><td>", "<i>"):
        assert raw not in section
    for shown in (HOSTILE, "<script>", "</td><td>"):
        assert html.escape(shown, quote=True) in section
    assert section.count('<tr><th><code class="tokname">') == 2 + 2 + 1 + 1 + 1 + 1  # peaks, before, real x2, promoted, suppressed
    evidence = json.loads(paths["json"].read_text())["evidence"]
    assert evidence["peak_tokens"]["top_prompts"]["at_peak"][0] == {
        "token": HOSTILE, "count": 2, "mean_activation": 1.75, "max_activation": 2.0,
    }  # fmt: skip
    assert evidence["peak_tokens"]["real_snippets"]["records"] == 1 and evidence["logit_effects"] == saved["logit_effects"]

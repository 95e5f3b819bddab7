"""The explanation in a run: the explain node ends a search with a scored sentence kept in the
run's files, --explain-every hands hypotheses to the LLM, and `run.py explain` explains a finished run."""

from __future__ import annotations

import json

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from neuron_search.testing.helpers import fresh_answers
from neuron_search.api import NeuronSearch
from neuron_search.services.llm.proposer import register_chat_model

SENTENCE = "Greek letters next to numbers."


class RoleAware(BaseChatModel):
    """A stand-in LLM that answers each kind of request as its role asks, and keeps every request:
    the explainer gets SENTENCE, the detection judge says every text fires, the generator and the
    proposer get fresh prompts."""

    requests: list[str] = []
    answers: list[str] = fresh_answers(400, per_answer=8)

    @property
    def _llm_type(self) -> str:
        return "role-aware-test"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        text = "\n".join(m.text for m in messages)
        self.requests.append(text)
        if '{"explanation"' in text:
            answer = json.dumps({"explanation": SENTENCE})
        elif '{"fires"' in text:
            answer = json.dumps({"fires": [True] * text.count("Text ")})
        else:
            answer = self.answers[len(self.requests) % len(self.answers)]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


def search(tiny_model_dir, tmp_path, llm: RoleAware, **settings) -> NeuronSearch:
    base = dict(model=str(tiny_model_dir), layer=1, neuron=3, device="cpu", llm=register_chat_model(llm), strategy="llm",
                batch_size=8, iterations=6, results_dir=str(tmp_path), run_id="explained")  # fmt: skip
    return NeuronSearch(**{**base, **settings})


def test_a_run_ends_with_its_explanation_scored_on_prompts_the_explainer_never_saw(tiny_model_dir, tmp_path):
    llm = RoleAware()
    result = search(tiny_model_dir, tmp_path, llm).run(progress=False)
    final = result.explanation
    assert final["explanation"] == SENTENCE and result.state["explanation"] == SENTENCE
    held = final["held_out"]["high"] + final["held_out"]["low"]
    assert held and not set(held) & set(final["shown"])
    scores = final["scores"]
    assert set(scores) == {"explanation", "control"} and scores["control"]["text"] != SENTENCE
    detection = scores["explanation"]["detection"]
    # This judge says "fires" to everything: every held-out prompt answered, balanced accuracy 0.5.
    assert (detection["n_high"], detection["n_low"]) == (len(final["held_out"]["high"]), len(final["held_out"]["low"]))
    assert detection["n_answered"] == len(held) and detection["balanced_accuracy"] == 0.5
    generation = scores["explanation"]["generation"]
    assert generation["n_fire"] > 0 and generation["n_not"] > 0
    # Every request but the proposer's was the explainer's or a scorer's, and each is counted.
    assert result.stats["explain_llm_calls"] == len(llm.requests) - result.stats["llm_calls"] > 4
    # The same block in results.json, the report (first section) and the run's explanation.json.
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["explanation"] == final
    page = (result.run_dir / "report.html").read_text()
    assert page.index("What the neuron detects") < page.index("Activation over the search") and SENTENCE in page
    # This judge tells nothing apart: the sentence ties the control, so it is not the answer, and the
    # evidence card (the themes the explainer saw, the peak tokens) leads the page.
    assert not final["verdict"]["wins"] and "not better than the control" in final["verdict"]["headline"]
    assert "not better than the control" in page and '<p class="explanation">' not in page
    assert page.index("What the evidence shows") < page.index("What the neuron detects")
    assert page.index("Themes of the top prompts") < page.index("What the neuron detects")
    baseline = final["token_baseline"]["run_prompts"]
    assert (baseline["n_high"], baseline["n_low"]) == (len(final["held_out"]["high"]), len(final["held_out"]["low"]))
    assert 0 < len(final["themes"]) <= 10 and [t["prompt"] for t in final["themes"]] == final["shown"][: len(final["themes"])]


def test_no_explain_makes_no_explanation(tiny_model_dir, tmp_path):
    llm = RoleAware()
    result = search(tiny_model_dir, tmp_path, llm, explain=False).run(progress=False)
    assert result.explanation == {} and result.stats["explain_llm_calls"] == 0
    assert not any('{"explanation"' in r for r in llm.requests)
    assert "What the neuron detects" not in (result.run_dir / "report.html").read_text()


def test_the_hypothesis_reaches_the_generators_request_only_with_explain_every(tiny_model_dir, tmp_path):
    def proposer_requests(llm: RoleAware) -> list[str]:
        return [r for r in llm.requests if "Write 8 new prompts" in r]

    on = RoleAware()
    result = search(tiny_model_dir, tmp_path, on, explain=False, explain_every=2, iterations=7, run_id="on").run(progress=False)
    with_hypothesis = [r for r in proposer_requests(on) if f"Current hypothesis on what it detects: {SENTENCE}" in r]
    # Hypotheses at iterations 2, 4 and 6; the LLM's requests from iteration 2 on carry one.
    assert len(proposer_requests(on)) == 6 and len(with_hypothesis) == 5
    timeline = json.loads((result.run_dir / "explanation.json").read_text())["hypotheses"]
    assert [h["iteration"] for h in timeline] == [2, 4, 6] and all(h["explanation"] == SENTENCE for h in timeline)
    assert all(h["generation"]["n_fire"] > 0 for h in timeline)
    page = (result.run_dir / "report.html").read_text()
    assert "Hypotheses during the search" in page and page.count('class="hypothesis"') == 3

    # Hypotheses count against --max-llm-calls: the proposer's first 3 calls and the first
    # hypothesis (the explainer's call and the generation score's) make the budget exactly.
    per_hypothesis = 1 + timeline[0]["generation"]["llm_calls"]
    budget = RoleAware(requests=[])
    capped = search(tiny_model_dir, tmp_path, budget, explain=False, explain_every=2, iterations=100, max_llm_calls=3 + per_hypothesis, run_id="cap").run(progress=False)
    assert capped.stop_reason == f"made {3 + per_hypothesis} LLM calls"
    assert capped.stats["llm_calls"] + capped.stats["explain_llm_calls"] == len(budget.requests) == 3 + per_hypothesis

    off = RoleAware()
    search(tiny_model_dir, tmp_path, off, explain=False, iterations=7, run_id="off").run(progress=False)
    assert proposer_requests(off) and not any("Current hypothesis" in r for r in proposer_requests(off))


def test_a_cached_corpus_scan_adds_real_text_the_explainer_never_saw(tiny_model_dir, tmp_path, monkeypatch):
    from neuron_search.services.dataset.exemplars import real_text_holdout
    from neuron_search.services.explain.run_explanation import REAL_TEXT_POOL
    from neuron_search.services.runtime import subject_model

    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))  # the scan's cache, not the user's
    llm = RoleAware(requests=[])
    # A gradient run's --seed-corpus scans the corpus (and seeds the top snippets, which the explainer may see).
    result = search(tiny_model_dir, tmp_path, llm, strategy="gradient", seed_corpus=True, iterations=3).run(progress=False)
    final = result.explanation
    expected = real_text_holdout(subject_model(str(tiny_model_dir), "cpu"), 1, 3, n=REAL_TEXT_POOL)
    assert expected is not None
    held = final["held_out"]
    shown = set(final["shown"])
    assert held["real_high"] == [p for p in expected[0] if p not in shown] and held["real_low"] == expected[1]
    assert set(expected[0]) & {r["prompt"] for r in result.records if r["source"] == "seed"}  # the seeds were real text
    assert not (set(held["real_high"]) | set(held["real_low"])) & shown
    for name in ("explanation", "control"):
        real = final["scores"][name]["real_text"]
        assert (real["n_high"], real["n_low"]) == (len(held["real_high"]), len(held["real_low"]))
        assert {e["prompt"] for e in real["examples"]} == set(held["real_high"]) | set(held["real_low"])
    # This judge says every text fires: all answered, balanced accuracy 0.5; the snippets reached it.
    assert final["scores"]["explanation"]["real_text"]["balanced_accuracy"] == 0.5
    assert any(held["real_low"][0] in r for r in llm.requests)
    assert "detection on real text" in (result.run_dir / "report.html").read_text()


def test_without_a_cached_scan_there_is_no_real_text_score(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))
    final = search(tiny_model_dir, tmp_path, RoleAware(requests=[])).run(progress=False).explanation
    assert "real_high" not in final["held_out"]
    assert final["scores"]["explanation"]["real_text"] is None

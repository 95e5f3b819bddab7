"""Rules every search obeys, whatever proposes its prompts (issue #33):

- findings are text: no added or control token of the tokenizer (`<start_of_image>`, `<unusedN>`,
  `[multimodal]`, Gemma's markup tags) is proposed by the gradient, the mutations or the fallback,
  and such a token's name written in a prompt is measured as the characters it spells;
- --max-prompts N measures exactly N prompts (the last batch is trimmed);
- the corpus scan inside a search reports its progress, with an estimate, when not on a terminal.

The bundled Gemma 3 270M checks what only a real tokenizer has (6,384 added tokens); the tiny
GPT-2 keeps the rest cheap.
"""

from __future__ import annotations

import random

import pytest

from neuron_search.testing.helpers import scripted, tiny_settings
from neuron_search.api import NeuronSearch
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.search.random_prompts import mutations, random_prompts

SEEDS = ("The quick brown fox jumps over the lazy dog.", "1, 2, 4, 8, 16, 32", "What is the capital of France?")


def control_ids(subject: SubjectModel) -> set[int]:
    """Every added or special token of the tokenizer, except the runs of newlines, tabs and spaces
    Gemma lists among its added tokens: those are how the tokenizer reads ordinary whitespace."""
    tokenizer = subject.tokenizer
    ids = {i for i, added in tokenizer.added_tokens_decoder.items() if added.content.strip()}
    return ids | set(tokenizer.all_special_ids)


def test_gemma_has_the_tokens_these_rules_are_about(gemma):
    tokenizer = gemma.tokenizer
    added = tokenizer.added_tokens_decoder
    names = {added[i].content: added[i].special for i in control_ids(gemma) if i in added}
    # Not special, so splitting special tokens alone left them readable as the control token.
    assert names["<start_of_image>"] is False and names["[multimodal]"] is False and names["<b>"] is False
    assert names["<unused5>"] is True and names["<start_of_turn>"] is True


@pytest.mark.parametrize(
    "prompt", ["A photo: <start_of_image> of a cat", "[multimodal] input", "<b>bold</b> and <td>cell</td>", "<unused5><start_of_turn>user"]
)
def test_an_added_tokens_name_in_a_prompt_is_measured_as_its_characters(gemma, prompt):
    ids = gemma.token_ids(prompt)
    assert not set(ids) & control_ids(gemma)
    (measured,) = gemma.measure([prompt], 9, 840)
    assert measured["error"] == "" and "".join(measured["tokens"]) == prompt
    assert len(measured["tokens"]) == len(ids)


def test_whitespace_and_ordinary_text_are_tokenized_as_before(gemma):
    """Gemma's newline and tab runs are added tokens too, and stay what the tokenizer makes of them."""
    for text in ("line one\n\nline two\tand a tab", "The quick brown fox jumps over the lazy dog."):
        assert gemma.token_ids(text) == gemma.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert gemma.token_ids("a\nb") == gemma.tokenizer("a\nb", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("allow", [False, True])
def test_the_text_reader_shares_the_tokenizers_model_and_reads_as_a_full_copy_would(gemma, allow):
    """The reader that keeps added tokens' names as characters is built on the tokenizer's own model
    (a full copy of Gemma's tokenizer held 0.3 GiB more), and reads every text as a full copy with
    the same flags does: the whole vocabulary's texts and random texts strung from them."""
    import json

    from tokenizers import Tokenizer

    from neuron_search.services.model.text_tokens import _sharing_copy, text_encoder

    def anonymous_gib() -> float:
        line = next(line for line in open("/proc/self/status") if line.startswith("RssAnon:"))
        return int(line.split()[1]) / 2**20

    tokenizer = gemma.tokenizer
    backend = tokenizer.backend_tokenizer
    ours = text_encoder(tokenizer, allow)
    before = anonymous_gib()
    another = _sharing_copy(backend, {t.content for t in backend.get_added_tokens_decoder().values()})
    assert anonymous_gib() - before < 0.05  # a full copy of Gemma's tokenizer: 0.29 GiB
    del another
    kept_special = {tokenizer.convert_ids_to_tokens(i) for i in tokenizer.all_special_ids}
    spec = json.loads(backend.to_str())
    for entry in spec["added_tokens"]:
        entry["special"] = entry["content"] in kept_special if allow else (entry["special"] or bool(entry["content"].strip()))
    full = Tokenizer.from_str(json.dumps(spec))
    full.encode_special_tokens = True
    texts = tokenizer.batch_decode([[i] for i in range(0, len(tokenizer), 7)])
    rng = random.Random(0)
    texts += ["".join(rng.choice(texts) for _ in range(6)) for _ in range(2000)]
    texts += ["Fashion<start_of_image><start_of_image>PLTA1", "<unused5><start_of_turn>user\n\n<b>hi</b>"]
    assert [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)] == [
        e.ids for e in full.encode_batch(texts, add_special_tokens=False)
    ]


def test_a_tokenizer_the_reader_cannot_share_is_copied_whole():
    """A backend with padding on (which a shared reader would not keep) is copied in full, with the
    names to be read as text marked special."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    from neuron_search.services.model.text_tokens import _sharing_copy

    backend = Tokenizer(WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    backend.add_tokens([AddedToken("<img>", special=False)])
    backend.enable_padding(length=4)
    copy = _sharing_copy(backend, {"<img>"})
    assert copy.padding is not None
    assert [t.special for t in copy.get_added_tokens_decoder().values()] == [True]
    shared = Tokenizer(WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    shared.add_tokens([AddedToken("<img>", special=False)])
    reader = _sharing_copy(shared, {"<img>"})
    reader.encode_special_tokens = True
    assert reader.encode("a<img>").ids != shared.encode("a<img>").ids


def test_the_gradient_may_never_propose_an_added_token(gemma):
    from neuron_search.services.search.candidates import allowed_tokens

    for ascii_only in (True, False):
        allowed = allowed_tokens(gemma, ascii_only)
        assert not allowed[sorted(control_ids(gemma))].any(), ascii_only
    assert allowed_tokens(gemma, True)[gemma.token_ids(" the")].all()


class _Rigged(random.Random):
    """A random source whose draws from the vocabulary fall on the tokens given, in turn."""

    def __init__(self, ids: list[int], size: int) -> None:
        super().__init__(0)
        self._ids, self._size, self._next = ids, size, 0

    def randrange(self, start, stop=None, step=1):  # noqa: D401 (random.Random's signature)
        if stop is None and start == self._size:
            self._next += 1
            return self._ids[self._next % len(self._ids)]
        return super().randrange(start, stop, step)


def test_the_fallback_and_the_mutations_never_draw_an_added_token(gemma):
    ids = sorted(control_ids(gemma))
    added = gemma.tokenizer.added_tokens_decoder  # built afresh at each access: read once
    names = [added[i].content for i in ids if i in added]
    vocabulary = gemma.vocabulary
    made = random_prompts(_Rigged(ids, len(vocabulary)), 60, vocabulary, ["a sentence of several plain words"])
    made += mutations(_Rigged(ids, len(vocabulary)), 60, vocabulary, ["a sentence of several plain words"])
    for prompt in made:
        assert prompt.strip() and not any(name in prompt for name in names), prompt


def test_no_proposed_or_fallback_prompt_of_a_gradient_run_holds_an_added_token(gemma, tmp_path, monkeypatch):
    """A seed that spells `<start_of_image>` is measured as characters, so the population never
    holds the token, and no child or fallback prompt is read as one."""
    import importlib

    gradient_node = importlib.import_module("neuron_search.nodes.gradient")  # `nodes.gradient` is also the node function

    proposed: list[list[int]] = []
    for name in ("propose_children", "propose_edits"):
        original = getattr(gradient_node, name)
        monkeypatch.setattr(gradient_node, name, lambda *a, _f=original, **k: proposed.extend(rows := _f(*a, **k)) or rows)
    seeds = ("A photo: <start_of_image> of a cat [multimodal]", "<b>Breaking news</b> from the city")
    search = NeuronSearch(
        model="embedded", layer=9, neuron=840, device="cpu", llm=scripted(["never asked"]), strategy="gradient",
        builtin_seeds=False, seed_prompts=seeds, seed_corpus=False, population=2, children=3, edits=1,
        lead_children=16, lead_uniform_positions=False,  # a lead that stalls within 3 iterations, so the fallback runs
        iterations=3, patience=4, results_dir=str(tmp_path), run_id="rules", explain=False,
    )  # fmt: skip
    result = search.run(progress=False)
    controls = control_ids(gemma)
    assert proposed and not any(set(row) & controls for row in proposed)
    sources = {r["source"] for r in result.records}
    assert {"seed", "gradient", "fallback"} <= sources, sources
    for record in result.records:  # what was measured: the token ids the measurement read
        assert not set(gemma.token_ids(record["prompt"])) & controls, record["prompt"]


def test_max_prompts_measures_exactly_that_many(tiny_model_dir, tmp_path):
    search = NeuronSearch(**tiny_settings(
        tiny_model_dir, llm=scripted(["never asked"]), strategy="gradient",
        builtin_seeds=False, seed_prompts=SEEDS, seed_corpus=False, population=4, children=4, results_dir=str(tmp_path),
        run_id="budget", max_prompts=40, iterations=1000, explain=False,
    ))  # fmt: skip
    result = search.run(progress=False)
    assert result.stop_reason == "measured 40 prompts"
    assert result.stats["measured"] == 40 and len(result.records) == 40


def test_the_scan_inside_a_search_prints_progress_when_not_on_a_terminal(tiny_model_dir, tmp_path, monkeypatch, capfd):
    import neuron_search.services.dataset.exemplars as exemplars_module
    from neuron_search.services.dataset.corpus import corpus_source

    monkeypatch.setenv("NEURON_SEARCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    words = "alpha beta gamma delta river stone cloud seven ninety copper violet engine ledger orbit".split()
    rng = random.Random(0)
    corpus.write_text("\n\n".join(" ".join(rng.choices(words, k=rng.randint(4, 30))) for _ in range(400)), encoding="utf-8")
    monkeypatch.setattr(exemplars_module, "corpus_source", lambda path=None: corpus_source(corpus))
    search = NeuronSearch(**tiny_settings(
        tiny_model_dir, llm=scripted(["never asked"]), strategy="gradient",
        builtin_seeds=False, seed_prompts=SEEDS, seed_corpus=True, population=2, children=2, results_dir=str(tmp_path / "results"),
        run_id="scan", iterations=1, explain=False,
    ))  # fmt: skip
    search.run(progress=False)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "layer 1" in line and "snippets" in line]
    assert len(lines) >= 5, err  # a line when it starts and about every 10%
    assert any("100%" in line for line in lines), err
    assert any("left" in line for line in lines), err  # an estimate of the time left


def test_allowing_added_tokens_reads_and_proposes_them_but_never_bos(gemma):
    """The opt-in (a run's `allow_added_tokens`): added tokens are read and proposed as tokens; the
    tokenizer's own special tokens (BOS, EOS, padding, ...) still never are."""
    from neuron_search.services.search.candidates import allowed_tokens

    image, unused, bold = (gemma.tokenizer.convert_tokens_to_ids(t) for t in ("<start_of_image>", "<unused5>", "<b>"))
    ids = gemma.token_ids("a <start_of_image> <unused5> <b>x</b> <bos>", allow_added_tokens=True)
    assert {image, unused, bold} <= set(ids) and gemma.tokenizer.bos_token_id not in ids
    (measured,) = gemma.measure(["A photo: <start_of_image> of a cat"], 9, 840, allow_added_tokens=True)
    assert "<start_of_image>" in measured["tokens"]
    allowed = allowed_tokens(gemma, True, allow_added_tokens=True)
    assert allowed[[image, unused, bold]].all() and not allowed[gemma.tokenizer.all_special_ids].any()
    vocabulary = gemma.vocabulary_for(True)
    assert vocabulary[image] == "<start_of_image>" and vocabulary[gemma.tokenizer.bos_token_id] == ""
    assert gemma.vocabulary[image] == ""  # the default vocabulary is text only

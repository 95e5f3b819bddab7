"""The subject model on the tiny GPT-2: right under concurrency, text as text, the peak of `last`,
agreement with a plain transformers forward pass, and a model without the neuron hook refused."""

from __future__ import annotations

import threading

import pytest
import torch

from neuron_search.services.errors import UserError
from neuron_search.services.model.subject_model import SubjectModel

WORDS = "alpha beta gamma delta river stone cloud seven ninety copper violet engine ledger orbit".split()


@pytest.fixture(scope="module")
def subject(tiny_model_dir) -> SubjectModel:
    return SubjectModel.load(str(tiny_model_dir), "cpu")


def batches(seed: int, count: int, size: int) -> list[list[str]]:
    """Prompts of different lengths, so that each batch is padded differently."""
    import random

    rng = random.Random(seed)
    return [[" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(size)] for _ in range(count)]


def test_two_threads_measuring_two_neurons_at_two_layers_get_what_each_gets_alone(subject):
    jobs = {"a": (0, 5, batches(1, 40, 6)), "b": (1, 17, batches(2, 40, 7))}
    alone = {name: [subject.measure(b, layer, neuron) for b in work] for name, (layer, neuron, work) in jobs.items()}
    together: dict[str, list] = {}
    start = threading.Barrier(len(jobs))

    def run(name: str) -> None:
        layer, neuron, work = jobs[name]
        start.wait()
        together[name] = [subject.measure(b, layer, neuron) for b in work]

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for name in jobs:
        got = [m for batch in together[name] for m in batch]
        want = [m for batch in alone[name] for m in batch]
        assert [m["error"] for m in got] == [""] * len(want), name
        assert [m["activation"] for m in got] == pytest.approx([m["activation"] for m in want], abs=1e-6), name
        assert [m["values"] for m in got] == [m["values"] for m in want], name


def test_special_token_names_in_a_prompt_are_measured_as_text(subject):
    bos = subject.tokenizer.bos_token_id  # <|endoftext|>, GPT-2's BOS, EOS and padding alike
    prompt = "<|endoftext|>hello<|endoftext|> world"
    assert bos not in subject.token_ids(prompt)
    (m,) = subject.measure([prompt], 1, 3)
    assert m["error"] == "" and "".join(m["tokens"]) == prompt
    assert len(m["tokens"]) > 4  # the name is spelled out in several text tokens, not one control token


def test_the_peak_of_a_last_measurement_is_the_last_token(subject):
    prompts = batches(3, 1, 8)[0]
    for m_max, m_last in zip(subject.measure(prompts, 1, 3, "max"), subject.measure(prompts, 1, 3, "last")):
        assert m_last["peak"] == len(m_last["tokens"]) - 1
        assert m_last["activation"] == pytest.approx(m_last["values"][-1], abs=1e-6)
        assert m_max["values"][m_max["peak"]] == max(m_max["values"])
        assert m_max["activation"] == pytest.approx(max(m_max["values"]), abs=1e-6)


def test_activations_match_a_plain_transformers_gpt2_forward(subject, tiny_model_dir):
    """GPT-2's pad, BOS and EOS are one token: padding must still never leak into a prompt's values."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()
    prompts = ["Hi", "The quick brown fox jumps over the lazy dog.", "1, 2, 4, 8, 16", "def main():\n    print('x')"]
    for layer in (0, 1):
        captured = []
        handle = model.transformer.h[layer].mlp.c_proj.register_forward_pre_hook(
            lambda module, args: captured.append(args[0][0, :, :].clone())
        )
        with torch.no_grad():
            for prompt in prompts:  # one at a time, BOS first as the tool does: no padding at all
                model(torch.tensor([[tokenizer.bos_token_id] + tokenizer(prompt)["input_ids"]]))
        handle.remove()
        for neuron in (0, 7, 200):
            measured = subject.measure(prompts, layer, neuron, batch_size=len(prompts))
            for m, values in zip(measured, captured):
                assert m["values"] == pytest.approx(values[1:, neuron].tolist(), abs=1e-5)


def test_layer_maxima_agree_with_measure(subject):
    prompts = batches(4, 1, 9)[0] + [""]
    maxima = subject.layer_maxima(prompts, 1, batch_size=4)
    assert maxima.shape == (len(prompts), subject.d_mlp)
    for neuron in (0, 3, 255):
        measured = subject.measure(prompts[:-1], 1, neuron)
        assert maxima[:-1, neuron].tolist() == pytest.approx([m["activation"] for m in measured], abs=1e-6)
    assert torch.isnan(torch.from_numpy(maxima[-1])).all()


def test_a_model_without_the_neuron_hook_is_refused_when_it_loads(subject, monkeypatch):
    bridge_class = type(subject.bridge)
    every_hook = bridge_class.hook_dict.fget
    without = property(lambda self: {k: v for k, v in every_hook(self).items() if k != "blocks.1.mlp.hook_post"})
    monkeypatch.setattr(bridge_class, "hook_dict", without)
    with pytest.raises(UserError, match=r"no hook blocks\.L\.mlp\.hook_post for layer\(s\) 1 "):
        SubjectModel(subject.bridge, "tiny", "cpu")
    monkeypatch.undo()
    SubjectModel(subject.bridge, "tiny", "cpu")  # whole again: accepted


def test_a_hook_that_never_fires_is_refused_when_it_loads(subject, monkeypatch):
    original = subject.bridge.run_with_hooks

    def skipping(tokens, fwd_hooks):  # as TransformerLens 3 did with names it did not know
        return original(tokens, fwd_hooks=[h for h in fwd_hooks if h[0] != "blocks.0.mlp.hook_post"])

    monkeypatch.setattr(subject.bridge, "run_with_hooks", skipping)
    with pytest.raises(UserError, match=r"for layer\(s\) 0 "):
        SubjectModel(subject.bridge, "tiny", "cpu")

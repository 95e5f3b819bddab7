"""The activations the tool reports equal an independent plain-transformers hook on the same MLP.

Run on the bundled real model (Gemma 3 270M), prompts of different lengths in one batch.
"""

from __future__ import annotations

import pytest
import torch

from neuron_search.services.model.bundled import embedded_subject_folder

PROMPTS = [
    "Hi",
    "1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048",
    "The old lighthouse keeper watched the storm roll in over the grey sea.",
    "def f(x):\n    return x * 2",
    "Москва — столица России.",
]
LAYERS, NEURON = (0, 6, 17), 123  # the first, a middle and the last layer of Gemma 3 270M


def independent_activations(folder, prompts: list[str], layer: int, neuron: int) -> list[list[float]]:
    """Per-token values of the neuron, one prompt at a time, read at the input of the MLP's down projection."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    captured = []
    handle = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda module, args: captured.append(args[0][0, :, neuron].clone())
    )
    values = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # the tokenizer puts BOS first
            assert ids[0, 0].item() == tokenizer.bos_token_id
            model(ids)
            values.append(captured.pop()[1:].tolist())  # BOS is never counted
    handle.remove()
    return values


@pytest.fixture(scope="module")
def expected() -> dict[int, list[list[float]]]:
    return {layer: independent_activations(embedded_subject_folder(), PROMPTS, layer, NEURON) for layer in LAYERS}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("position", ["max", "last"])
def test_batched_activations_match_a_plain_transformers_hook(gemma, expected, position, layer):
    measured = gemma.measure(PROMPTS, layer, NEURON, position, batch_size=len(PROMPTS))
    expected = expected[layer]
    for m, values in zip(measured, expected):
        assert m["error"] == "" and len(m["values"]) == len(values)
        want = max(values) if position == "max" else values[-1]
        assert m["activation"] == pytest.approx(want, abs=1e-4)
        assert m["values"] == pytest.approx(values, abs=1e-4)
        # The peak token is where the measurement was read: the highest token, or the last one.
        assert m["peak"] == (m["values"].index(max(m["values"])) if position == "max" else len(values) - 1)


def test_sizes_are_read_from_the_model_and_checked(gemma):
    from neuron_search.services.errors import UserError

    assert (gemma.n_layers, gemma.d_mlp) == (18, 2048)
    with pytest.raises(UserError, match="18 layers"):
        gemma.validate(18, 0)
    with pytest.raises(UserError, match="2048 neurons"):
        gemma.validate(0, 2048)


def test_gemma_control_tokens_written_in_a_prompt_are_measured_as_text(gemma):
    prompt = "<bos>hello <start_of_turn>user"
    tokenizer = gemma.tokenizer
    control = {tokenizer.convert_tokens_to_ids(t) for t in ("<bos>", "<start_of_turn>")}
    assert control == {2, 105}  # what the tokenizer would make of them if it parsed the text
    assert not control & set(gemma.token_ids(prompt))
    (m,) = gemma.measure([prompt], 9, NEURON)
    assert m["error"] == "" and "".join(m["tokens"]) == prompt

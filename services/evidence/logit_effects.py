"""What a neuron writes: its direct effect on the logits, read from the subject model's weights.

One unit of the neuron's activation adds row n of the MLP's output weight, W_out[n] (d_model), to
the MLP's output. On its way to the logits that vector passes through the block's post-MLP norm
where the model has one (Gemma's `post_feedforward_layernorm`, the bridge's `ln2_post`; GPT-2 has
none) and, after the last block, through the final norm (`ln_final`: GPT-2's `ln_f`, Gemma's
`norm`), then the unembedding W_U (d_model x d_vocab). The norms are not linear: each divides its
whole input by a per-token scale (LayerNorm's standard deviation, RMSNorm's root mean square) that
depends on everything else in the residual stream. As TransformerLens users (`fold_ln`,
`center_writing_weights`) and Neuronpedia do, that per-token scale is ignored and each norm's
linear part is kept:

    effect = W_U^T (g_final * C_final(g_post * C_post(W_out[n])))        [d_vocab]

- g, a norm's gain: LayerNorm's `weight` (GPT-2's ln_f); for Gemma's RMSNorm `1 + weight` (its
  Gemma3RMSNorm multiplies by 1 + weight); for a Llama-style RMSNorm `weight`. It is read by
  probing the norm module itself, so whichever of these a model uses is what is multiplied by,
  and the probe is checked against the module on another vector (`NormUnderstood`).
- C: LayerNorm's mean subtraction over d_model, which is linear and so applied exactly (what
  TransformerLens' `center_writing_weights` does to W_out); an RMSNorm does not centre (C = 1).
- Left out: the per-token scale (so the values are logits per unit of activation as if the norms'
  scales were 1: compare them within a neuron, and across neurons only roughly), LayerNorm's bias
  and the unembedding's bias (the same whatever the neuron does), and the rest of the network (the
  effect is direct: through later attention and MLPs the neuron can do more). W_U is not centred
  over the vocabulary (TransformerLens' `center_unembed`): that would shift every token's effect by
  the same amount, leaving the ranking as it is.

W_out and W_U are the bridge's (`blocks[L].mlp.W_out`, `unembed.original_component.weight`), as
services/model/gradient.py reads W_E through `bridge.embed.original_component`;
tests/test_evidence.py checks them against a forward pass on the tiny GPT-2 and the bundled Gemma.
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch

from neuron_search.services.model.subject_model import SubjectModel

DEFAULT_K = 10


class TokenEffect(TypedDict):
    token: str  # the token's text
    id: int  # its id in the vocabulary
    effect: float  # its logit's change per unit of the neuron's activation (see the module docstring)


class NormStep(TypedDict):
    name: str  # the bridge's name of the norm: "blocks.L.ln2_post", "ln_final"
    kind: str  # "LayerNorm" (centres, then scales) or "RMSNorm" (scales)
    module: str  # the model's class for it: LayerNorm, Gemma3RMSNorm, ...


class LogitEffects(TypedDict):
    layer: int
    neuron: int
    method: str  # the formula, in words
    norms: list[NormStep]  # the norms between the neuron and the logits, in order
    promoted: list[TokenEffect]  # the k largest effects, largest first
    suppressed: list[TokenEffect]  # the k smallest (most negative), smallest first
    d_vocab: int


METHOD = (
    "W_out[n] through each norm between it and the logits, keeping the norm's linear part (LayerNorm: "
    "mean removed, times weight; RMSNorm: times its gain, 1 + weight for Gemma), ignoring each norm's "
    "per-token scale and the biases, then times W_U"
)


class NormUnderstood(ValueError):
    """A norm module that is neither a LayerNorm nor an RMSNorm as described in the module docstring."""


def logit_effects(subject: SubjectModel, layer: int, neuron: int, k: int = DEFAULT_K) -> LogitEffects:
    """The neuron's direct effect on every logit (see the module docstring for the normalisation),
    and the k tokens it promotes and suppresses most."""
    subject.validate(layer, neuron)
    vector, steps = effect_vector(subject, layer, neuron)
    k = max(1, min(int(k), vector.numel()))
    top = torch.topk(vector, k)
    bottom = torch.topk(-vector, k)
    return LogitEffects(
        layer=layer,
        neuron=neuron,
        method=METHOD,
        norms=steps,
        promoted=_effects(subject, top.indices, top.values),
        suppressed=_effects(subject, bottom.indices, -bottom.values),
        d_vocab=vector.numel(),
    )


def effect_vector(subject: SubjectModel, layer: int, neuron: int) -> tuple[torch.Tensor, list[NormStep]]:
    """The effect on every logit ([d_vocab], float32, on the CPU) and the norms it went through."""
    bridge = subject.bridge
    with subject.exclusive, torch.inference_mode():
        w_out = bridge.blocks[layer].mlp.W_out
        if tuple(w_out.shape) != (subject.d_mlp, bridge.cfg.d_model):
            raise NormUnderstood(
                f"{subject.name}: blocks.{layer}.mlp.W_out has shape {tuple(w_out.shape)}, not "
                f"(d_mlp, d_model) = ({subject.d_mlp}, {bridge.cfg.d_model})."
            )
        vector = w_out[neuron].detach().float()
        steps: list[NormStep] = []
        post = getattr(bridge.blocks[layer], "ln2_post", None)
        for name, norm in ((f"blocks.{layer}.ln2_post", post), ("ln_final", getattr(bridge, "ln_final", None))):
            if norm is None:
                continue
            module = getattr(norm, "original_component", None) or norm
            centres, gain = norm_map(module, bridge.cfg.d_model)
            if centres:
                vector = vector - vector.mean()
            vector = vector * gain
            steps.append(NormStep(name=name, kind="LayerNorm" if centres else "RMSNorm", module=type(module).__name__))
        weight = unembedding(subject)
        effect = weight @ vector.to(weight.device, weight.dtype)
        return effect.float().cpu(), steps


def unembedding(subject: SubjectModel) -> torch.Tensor:
    """W_U as [d_vocab, d_model] (the unembedding's own layout: no copy of a 262k-row matrix)."""
    head = subject.bridge.unembed.original_component
    weight = getattr(head, "weight", None)
    d_model = subject.bridge.cfg.d_model
    if weight is not None and weight.dim() == 2 and weight.shape[1] == d_model:
        return weight.detach()
    return subject.bridge.W_U.detach().T  # another layout: the bridge's (d_model, d_vocab), as a view


def norm_map(module: torch.nn.Module, d_model: int) -> tuple[bool, torch.Tensor]:
    """(whether the norm centres its input, its gain [d_model]), read from the module by probing:
    y(x) = C(x) / s(x) * g + y(0), where s is the root mean square of C(x) (plus the module's eps).
    Checked on a second vector; a module that is not such a norm raises NormUnderstood."""
    weight = next(module.parameters(), None)
    device, dtype = (weight.device, weight.dtype) if weight is not None else ("cpu", torch.float32)
    eps = float(getattr(module, "eps", getattr(module, "variance_epsilon", 0.0)) or 0.0)
    index = torch.arange(d_model, dtype=torch.float64)
    # Alternating signs, magnitudes between 1 and 1.5: after centring no entry is near 0.
    probe = torch.where(index % 2 == 0, 1.0, -1.0) * (1 + 0.5 * torch.frac(index * 0.6180339887))
    other = torch.sin(index * 1.7 + 0.3) * 2 + 0.7  # not centred: tells LayerNorm from RMSNorm

    def run(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(device, dtype).unsqueeze(0)).squeeze(0).double().cpu()

    zero = run(torch.zeros(d_model, dtype=torch.float64))
    centres = bool(torch.allclose(run(probe + 3.0), run(probe), rtol=1e-3, atol=1e-4))

    def normalised(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean() if centres else x
        return x / math.sqrt(float(x.square().mean()) + eps)

    gain = (run(probe) - zero) / normalised(probe)
    expected = normalised(other) * gain + zero
    got = run(other)
    if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(got.abs().max() or 1.0)):
        raise NormUnderstood(
            f"{type(module).__name__} is neither a LayerNorm nor an RMSNorm (output = input, centred or not, "
            "over its root mean square, times a gain, plus a bias): the neuron's effect on the logits "
            "cannot be read through it."
        )
    return centres, gain.float()


def _effects(subject: SubjectModel, ids: torch.Tensor, values: torch.Tensor) -> list[TokenEffect]:
    return [
        TokenEffect(token=subject.token_texts[int(i)], id=int(i), effect=float(v))
        for i, v in zip(ids.tolist(), values.tolist())
    ]

"""The context that matters: each earlier token's effect on the neuron's activation at the peak.

A prompt is tokenized as the subject model measures it (`SubjectModel.token_ids`, one BOS in front,
added by `SubjectModel.padded`), and its peak is found as `measure` finds it: the token with the
highest value (the first of equal ones) with `--position max`, the last token with `--position last`.
For each token i before the peak, two ablations:

- **removal** (the one reported first, `PRIMARY`): the prompt without token i. The activation is read
  at the same peak token, which has moved one position to the left. effect = activation(full) -
  activation(without token i).
- **replacement**: token i replaced by a neutral token, `NEUTRAL_TEXT` (" the", when the tokenizer
  makes it one token; else " ", else the first token of "the"; each entry names the token used).
  Positions stay as they are, but a token is put in. effect = activation(full) - activation(with
  token i replaced).

Removal is the primary one because it puts nothing in the prompt's place; its cost is the shift of
later positions, which a model with absolute position embeddings (GPT-2) can feel: where the two
disagree, the tooltip and `run.py evidence` show both.

A positive effect: the token helps the neuron fire (taking it away lowers the activation); negative:
it holds the neuron back. Tokens after the peak cannot change the activation at the peak under
causal attention: their effect is None ("no effect: after the peak"), never measured; so is the
peak token's own (taking it away changes which token is read). BOS is never removed or replaced
(it is not one of the prompt's tokens: it is added in front of every row).

Cost: the full prompt is measured first, alone (its values give the peak). The ablated rows stop at
the peak token (nothing after it can change it), so all removals have one length (the peak's index)
and all replacements one more: the 2 * peak ablations go through right-padded forward passes of
`batch_size` rows (8). Right padding leaves real tokens' values as they are, under causal
attention. Each pass runs under inference mode (no gradient kept) and stops at the neuron's layer,
as `SubjectModel.measure` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypedDict

import torch

from neuron_search.services.model.subject_model import SubjectModel

PRIMARY = "removal"  # the ablation the report and the tables show first
NEUTRAL_TEXT = " the"
# Ablated rows a forward pass. With 128 (a peak at up to the 65th token in one pass) a default run's
# evidence held 0.23 GiB more than before it, the peak of the whole run; 32 held 0.08 GiB, 8 holds
# 0.007 and ran faster on a CPU (bench/RESULTS.md section 23).
BATCH_SIZE = 8
AFTER_PEAK = "no effect: after the peak (causal attention), or the peak token itself"

Source = Literal["top prompt", "real snippet"]


class Attribution(TypedDict):
    prompt: str
    source: str  # "top prompt" (the best of one of the run's top themes) or "real snippet"
    tokens: list[str]  # the prompt's tokens as text, BOS left out (as a record's)
    values: list[float]  # the neuron at each token in the full prompt (the first row of colour)
    peak: int  # index of the peak token in `tokens`
    activation: float  # the neuron at the peak, full prompt
    removal: list[float | None]  # per token: activation(full) - activation(without it); None from the peak on
    replacement: list[float | None]  # per token: activation(full) - activation(it replaced by `replacement_token`)
    replacement_token: str  # the neutral token's text
    primary: str  # which of the two is the one shown first: "removal"
    after_peak: str  # what None means


class _NeuronRead(Exception):
    """Raised by the hook once the neuron is read: the rest of the forward pass is not needed."""


def neutral_token(subject: SubjectModel) -> int:
    """The id of the neutral token a replacement puts in (see the module docstring)."""
    for text in (NEUTRAL_TEXT, " "):
        ids = subject.token_ids(text)
        if len(ids) == 1:
            return ids[0]
    return subject.token_ids(NEUTRAL_TEXT.strip())[0]


def attribution(
    subject: SubjectModel,
    prompt: str,
    layer: int,
    neuron: int,
    position: str = "max",
    source: Source = "top prompt",
    allow_added_tokens: bool = False,
    batch_size: int = BATCH_SIZE,
) -> Attribution:
    """Each of the prompt's tokens' effect on the neuron at its peak, by removal and by replacement
    (see the module docstring). Raises ValueError for a prompt that tokenizes to nothing."""
    ids = subject.token_ids(prompt, allow_added_tokens) if allow_added_tokens else subject.token_ids(prompt)
    if not ids:
        raise ValueError(f"{prompt[:60]!r} tokenizes to nothing")
    neutral = neutral_token(subject)
    values, peak, removal, replacement = token_effects(subject, ids, layer, neuron, position, neutral, batch_size)
    return Attribution(
        prompt=prompt,
        source=source,
        tokens=[subject.token_texts[t] for t in ids],
        values=[round(v, 6) for v in values],
        peak=peak,
        activation=values[peak],
        removal=removal,
        replacement=replacement,
        replacement_token=subject.token_texts[neutral],
        primary=PRIMARY,
        after_peak=AFTER_PEAK,
    )


def token_effects(
    subject: SubjectModel,
    ids: Sequence[int],
    layer: int,
    neuron: int,
    position: str,
    neutral: int,
    batch_size: int = BATCH_SIZE,
) -> tuple[list[float], int, list[float | None], list[float | None]]:
    """(the full prompt's per-token values, its peak, the removal effects, the replacement effects)
    of the token ids `ids` (no BOS): effects are None from the peak on. Two passes: the full prompt,
    whose values give the peak; then its 2 * peak ablations, which stop at the peak token."""
    ids = list(ids)
    n = len(ids)
    full = _neuron_values(subject, [ids], layer, neuron, batch_size)[0]
    peak = _peak(full, position)
    ablated = _neuron_values(subject, _ablations(ids, peak, neutral), layer, neuron, batch_size) if peak else []
    activation = full[peak]
    removal: list[float | None] = [None] * n
    replacement: list[float | None] = [None] * n
    for i in range(peak):
        removal[i] = activation - ablated[i][peak - 1]  # the peak token is one to the left without token i
        replacement[i] = activation - ablated[peak + i][peak]
    return full, peak, removal, replacement


def _ablations(ids: list[int], peak: int, neutral: int) -> list[list[int]]:
    """For each token before the peak, the prompt through its peak without it, then with it replaced
    by `neutral`: 2 * peak rows (BOS is added in front of each, and never ablated)."""
    through = ids[: peak + 1]
    removed = [through[:i] + through[i + 1 :] for i in range(peak)]
    replaced = [through[:i] + [neutral] + through[i + 1 :] for i in range(peak)]
    return removed + replaced


def _peak(values: list[float], position: str) -> int:
    """The peak as `SubjectModel.measure` finds it: the highest value (the first of equal ones), or the last token."""
    if position == "max":
        return max(range(len(values)), key=values.__getitem__)
    return len(values) - 1


def _neuron_values(subject: SubjectModel, rows: list[list[int]], layer: int, neuron: int, batch_size: int) -> list[list[float]]:
    """The neuron's value at each text token of each row (BOS added, not returned), `batch_size` rows
    a forward pass that stops at the neuron's layer, under inference mode."""
    out: list[list[float]] = []
    hook = f"blocks.{layer}.mlp.hook_post"
    for start in range(0, len(rows), max(1, batch_size)):
        chunk = rows[start : start + max(1, batch_size)]
        captured: list[torch.Tensor] = []

        def keep(activation: torch.Tensor, hook) -> None:  # noqa: ARG001 (TransformerLens API)
            captured.append(activation[..., neuron].detach().float().cpu())
            raise _NeuronRead

        with subject.exclusive, torch.inference_mode():
            tokens, offset = subject.padded(chunk)
            try:
                subject.bridge.run_with_hooks(tokens, fwd_hooks=[(hook, keep)])
            except _NeuronRead:
                pass
        values = captured[0]
        out.extend(values[i, offset : offset + len(row)].tolist() for i, row in enumerate(chunk))
    return out


def strongest(entry: Attribution, k: int = 5, kind: str = PRIMARY) -> list[tuple[int, float]]:
    """The k tokens with the largest |effect| (of `kind`: "removal" or "replacement"), as (index, effect)."""
    effects = [(i, e) for i, e in enumerate(entry[kind]) if e is not None and math.isfinite(e)]  # type: ignore[literal-required]
    return sorted(effects, key=lambda ie: -abs(ie[1]))[:k]

"""Token gradients and fluency gains for a gradient-guided (GCG / EPO style) search: the maths.

Which tokens a child may hold and how children are drawn from these scores are the search's rules
(services/search/candidates.py).

The neuron's gradient with respect to a prompt's one-hot tokens says which single-token swaps
should raise it most (to first order). It is formed without a dense one-hot forward pass: the
output of `hook_embed` is replaced by a leaf tensor `e` holding exactly what the model would have
computed, and since `e = scale * W_E[ids]` (Gemma scales its embeddings by sqrt(d_model), GPT-2 does
not), d neuron / d one-hot = grad_e @ (scale * W_E).T. The scale is read from the model, never assumed.

Rows of token ids here hold a prompt's text tokens only; the BOS token is added by each forward
pass, as `SubjectModel` does, so BOS can never be swapped. Every forward pass, backward pass and
tokenizer call holds `subject.exclusive` (the model and its hooks are shared by every search of
the process).
"""

from __future__ import annotations

import weakref

import torch

from neuron_search.services.errors import UserError
from neuron_search.services.model.subject_model import SubjectModel, predicting

# Read once per model and kept for as long as the model lives.
_scales: weakref.WeakKeyDictionary[SubjectModel, float] = weakref.WeakKeyDictionary()

# Any text will do: the scale is read from the ratio of the hook's output to W_E's rows.
_SCALE_PROBE = "The quick brown fox jumps over the lazy dog"


class _Stop(Exception):
    """Raised by a hook once what the pass is for has been read, to end the forward pass there."""


def embedding_matrix(subject: SubjectModel) -> torch.Tensor:
    """W_E, [d_vocab, d_model], outside autograd: gradients are taken on `e`, never on weights."""
    return subject.bridge.embed.original_component.weight.detach()


def embedding_scale(subject: SubjectModel) -> float:
    """The factor between `hook_embed`'s output and W_E's rows (sqrt(d_model) for Gemma, 1 for GPT-2).

    Read from one forward pass that stops at the embedding: a least-squares ratio over every entry,
    since single entries of W_E can be 0. A model whose embedding is not a scaled lookup of W_E is
    refused, as its gradient could not be formed this way.
    """
    with subject.exclusive:
        scale = _scales.get(subject)
        if scale is not None:
            return scale
        tokens = torch.tensor([subject._with_bos(subject.token_ids(_SCALE_PROBE))], device=subject.device)
        captured: list[torch.Tensor] = []

        def keep(embedded: torch.Tensor, hook) -> None:  # noqa: ARG001 (TransformerLens API)
            captured.append(embedded.detach())
            raise _Stop

        with torch.inference_mode():
            try:
                subject.bridge.run_with_hooks(tokens, fwd_hooks=[("hook_embed", keep)])
            except _Stop:
                pass
            embedded = captured[0].float()
            looked_up = embedding_matrix(subject)[tokens].float()
            scale = float((embedded * looked_up).sum() / looked_up.square().sum())
            mismatch = float((embedded - scale * looked_up).norm() / embedded.norm())
        if mismatch > 1e-4:
            raise UserError(
                f"The subject model {subject.name}'s embedding (hook_embed) is not a scaled lookup of its "
                f"token embedding matrix (relative mismatch {mismatch:.2g}), so token gradients cannot be "
                "computed for it. Use a model whose embedding is a plain lookup (GPT-2, Gemma, Llama and "
                "most decoder-only models), or a strategy that needs no gradient."
            )
        _scales[subject] = scale
        return scale


def token_gradients(
    subject: SubjectModel, rows: list[list[int]], layer: int, neuron: int, position: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The neuron's activation for each row of text tokens, and its gradient with respect to the
    row's one-hot tokens.

    One right-padded forward pass (BOS added) that ends at `blocks.{layer}.mlp.hook_post`. The
    objective of a row is the neuron at its peak text token (`position` "max") or its last text
    token ("last"), as `SubjectModel.measure` reads it. Returns the activations, [len(rows)], and
    per row a [len(row), d_vocab] gradient: entry [p, v] is the first-order change of the
    activation if the token at text position p were v (so a swap old -> new is predicted to add
    grad[p, new] - grad[p, old]). Both on the CPU.
    """
    if position not in ("max", "last"):
        raise ValueError(f"position must be 'max' or 'last', not {position!r}")
    scale = embedding_scale(subject)
    tokens, offset = subject.padded(rows)
    leaves: list[torch.Tensor] = []
    read: list[torch.Tensor] = []

    def inject(embedded: torch.Tensor, hook) -> torch.Tensor:  # noqa: ARG001 (TransformerLens API)
        # The same values the model computed, as a leaf: the backward pass ends here, at `e`.
        leaves.append(embedded.detach().clone().requires_grad_())
        return leaves[0]

    def keep(activation: torch.Tensor, hook) -> None:  # noqa: ARG001 (TransformerLens API)
        read.append(activation[..., neuron])  # not detached: the objective is taken from it
        raise _Stop  # the layers above cannot change the neuron

    # inference_mode(False) as well as enable_grad: a caller inside inference_mode would otherwise
    # get tensors that autograd refuses, and enable_grad alone does not leave inference mode.
    with subject.exclusive, torch.inference_mode(False), torch.enable_grad():
        try:
            subject.bridge.run_with_hooks(
                tokens, fwd_hooks=[("hook_embed", inject), (f"blocks.{layer}.mlp.hook_post", keep)]
            )
        except _Stop:
            pass
        values = read[0]
        objectives = []
        for i, row in enumerate(rows):
            text = values[i, offset : offset + len(row)]
            # argmax returns the first of equal maxima, as `measure` picks its peak.
            peak = int(text.argmax()) if position == "max" else len(row) - 1
            objectives.append(text[peak])
        activations = torch.stack(objectives)
        # Rows are independent (right padding, causal attention), so one backward pass of the sum
        # gives every row its own gradient. autograd.grad on `e` alone leaves the weights' .grad alone.
        (grad_e,) = torch.autograd.grad(activations.sum(), leaves[0])
    # Scaled before the product, on [len(row), d_model] rather than on [len(row), d_vocab].
    unembedded = embedding_matrix(subject).T
    grads = [((grad_e[i, offset : offset + len(row)] * scale) @ unembedded).float().cpu() for i, row in enumerate(rows)]
    return activations.detach().float().cpu(), grads


def fluency_gains(subject: SubjectModel, rows: list[list[int]], batch_size: int = 8) -> list[torch.Tensor]:
    """Per row of text tokens, [len(row), d_vocab]: entry [p, v] is how much swapping the token at
    text position p for v lowers the row's cross-entropy (`SubjectModel.cross_entropy`, the mean
    next-token loss of its own tokens) through that position's own term:
    (log p(v | BOS, tokens before p) - log p(current token | same)) / predicted tokens.

    This is EPO's direct fluency term, exact for that term; the swap's effect on how later tokens
    are predicted is not in it. Entries of the current tokens are 0. A model without a BOS token
    predicts nothing at the first position, whose row is then 0. One inference pass per
    `batch_size` rows, with logits at the predicting positions only (`SubjectModel.logits_blocks`).
    """
    out: list[torch.Tensor] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        tokens, offset = subject.padded(chunk)
        lengths = [len(row) for row in chunk]
        first = 1 - offset  # the first predicted text position (0 after BOS)
        with subject.exclusive, torch.inference_mode():
            where = predicting(tokens, offset, lengths)
            counts = where.sum(dim=1).tolist()
            # Each row's gains are written straight into a tensor of its own, block by block as
            # the logits come (`logits_blocks`, in `where.nonzero()` order: row by row), with a row
            # of zeros in front where the first text token is not predicted: no copy of the logits
            # is ever held beside it (a 64-token row's is 64 MiB for Gemma).
            gains: list[torch.Tensor] = []
            row, filled = 0, 0
            for block in subject.logits_blocks(tokens, where):
                if not gains:
                    gains = [block.new_zeros(length, block.shape[-1], dtype=torch.float32) for length in lengths]
                taken = 0
                while taken < len(block):
                    while filled == counts[row]:
                        row, filled = row + 1, 0
                    n = min(len(block) - taken, counts[row] - filled)
                    gains[row][first + filled : first + filled + n].copy_(block[taken : taken + n])
                    taken, filled = taken + n, filled + n
            if not gains:  # no row predicts anything: every gain is 0
                gains = [torch.zeros(length, _vocabulary_out(subject)) for length in lengths]
            for row_ids, predicted, gain in zip(chunk, counts, gains):
                if predicted:
                    # log p(v | …) - log p(current | …) = logit(v) - logit(current): the normalizer
                    # cancels, so no log-softmax over the vocabulary is needed.
                    logits = gain[first:]
                    current = logits.gather(1, torch.tensor(row_ids[first:], device=logits.device)[:, None])
                    logits.sub_(current).div_(predicted)
                out.append(gain.cpu())
    return out


def _vocabulary_out(subject: SubjectModel) -> int:
    """The size of the model's logits: the unembedding's outputs (`d_vocab_out`), else W_E's rows."""
    size = getattr(subject.bridge.cfg, "d_vocab_out", None)
    return int(size) if isinstance(size, int) and size > 0 else embedding_matrix(subject).shape[0]

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
from collections.abc import Callable, Sequence

import torch

from neuron_search.services.errors import UserError
from neuron_search.services.model.subject_model import SubjectModel, predicting

# Read once per model and kept for as long as the model lives.
_scales: weakref.WeakKeyDictionary[SubjectModel, float] = weakref.WeakKeyDictionary()

# The bytes of one piece of swap scores (`swap_scores`): [positions, tokens] float, as many tokens as
# fit. At least 4 MiB, so that each piece gets pages of its own and gives them back when freed
# (`return_large_frees_to_the_os`): pieces of 16,384 tokens (2 MiB for a 30-token row) came from the
# heap, which grew by 0.02 GiB over 160 prompts in tests/test_memory.py.
PIECE_BYTES = 8 << 20

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


def embedding_gradients(
    subject: SubjectModel, rows: list[list[int]], layer: int, neuron: int, position: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The neuron's activation for each row of text tokens, and its gradient with respect to the
    row's embedded tokens times the embedding scale: per row [len(row), d_model], on the model's
    device. `token_gradients` is this times W_E.T; kept this small, a caller can form that product
    a few positions at a time (`swap_scores`).

    One right-padded forward pass (BOS added) that ends at `blocks.{layer}.mlp.hook_post`. The
    objective of a row is the neuron at its peak text token (`position` "max") or its last text
    token ("last"), as `SubjectModel.measure` reads it. The activations are on the CPU.
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
    return activations.detach().float().cpu(), [grad_e[i, offset : offset + len(row)] * scale for i, row in enumerate(rows)]


def token_gradients(
    subject: SubjectModel, rows: list[list[int]], layer: int, neuron: int, position: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The neuron's activation for each row of text tokens (`embedding_gradients`), and its gradient
    with respect to the row's one-hot tokens: per row [len(row), d_vocab], entry [p, v] the
    first-order change of the activation if the token at text position p were v (so a swap old -> new
    is predicted to add grad[p, new] - grad[p, old]). Both on the CPU. A search ranks its swaps
    from `swap_scores` instead, which never holds a whole row of these (1 MiB a token for Gemma).
    """
    activations, grads = embedding_gradients(subject, rows, layer, neuron, position)
    unembedded = embedding_matrix(subject).T
    return activations, [(grad @ unembedded).float().cpu() for grad in grads]


def fluency_gains(subject: SubjectModel, rows: list[list[int]]) -> list[torch.Tensor]:
    """Per row of text tokens, [len(row), d_vocab]: entry [p, v] is how much swapping the token at
    text position p for v lowers the row's cross-entropy (`SubjectModel.cross_entropy`, the mean
    next-token loss of its own tokens) through that position's own term:
    (log p(v | BOS, tokens before p) - log p(current token | same)) / predicted tokens.

    This is EPO's direct fluency term, exact for that term; the swap's effect on how later tokens
    are predicted is not in it. Entries of the current tokens are 0. A model without a BOS token
    predicts nothing at the first position, whose row is then 0. Gathered from `_gain_tiles`, one
    row at a time; a search takes them tile by tile instead (`swap_scores`).
    """
    out: list[torch.Tensor] = []
    for row in rows:
        gain = torch.zeros(len(row), _vocabulary_out(subject))

        def keep(start: int, ids: range, tile: torch.Tensor) -> None:
            gain[start : start + len(tile), ids.start : ids.stop].copy_(tile)

        _gain_tiles(subject, row, keep)
        out.append(gain)
    return out


def _gain_tiles(subject: SubjectModel, row: list[int], consume: Callable[[int, range, torch.Tensor], None]) -> None:
    """`fluency_gains` of one row, handed to `consume(start, ids, tile)` tile by tile as the logits
    come (`SubjectModel.logits_blocks`): `tile` [n, len(ids)] float holds the gains at text positions
    start .. start + n - 1 for the token ids `ids`, computed in the logits' own memory, and is valid
    only during the call. Positions never handed over (the first, for a model without BOS) have gains
    of 0. One inference pass, with logits at the predicting positions only."""
    tokens, offset = subject.padded([row])
    first = 1 - offset  # the first predicted text position (0 after BOS)
    with subject.exclusive, torch.inference_mode():
        where = predicting(tokens, offset, [len(row)])
        predicted = int(where.sum())
        at = first
        for block in subject.logits_blocks(tokens, where):
            ids_here = torch.tensor(row[at : at + block.size], device=tokens.device)
            positions = torch.arange(block.size, device=tokens.device)
            # log p(v | …) - log p(current | …) = logit(v) - logit(current): the normalizer cancels,
            # so no log-softmax over the vocabulary is needed.
            current = block.at(positions, ids_here).float()[:, None]
            for ids, tile in block.tiles():
                gains = tile.float().sub_(current).div_(predicted)  # the tile itself, for a float32 model
                # The current token's own gain is 0 exactly (its logit from `at` may round otherwise).
                mine = (ids_here >= ids.start) & (ids_here < ids.stop)
                gains[positions[mine], ids_here[mine] - ids.start] = 0
                consume(at, ids, gains)
            at += block.size


def swap_scores(
    subject: SubjectModel,
    row: list[int],
    weights: Sequence[float],
    layer: int,
    neuron: int,
    position: str,
    consume: Callable[[range, float, range, torch.Tensor], None],
    distance: float = 0.0,
) -> None:
    """What a population member ranks its swaps by, for each fluency weight in `weights`: the row's
    `token_gradients` plus the weight times its `fluency_gains` (a weight of 0: the gradient alone,
    and no gains computed), handed over a piece at a time as `consume(positions, weight, tokens,
    scores)`: scores [len(positions), len(tokens)] float, for those text positions and that range of
    token ids, valid only during the call. Every (position, token) pair comes exactly once per weight.

    With `distance` > 0 the gradient-alone scores (weight 0) are lowered by `distance_penalty`: the
    further a token's embedding from the one it replaces, the less its first-order estimate is worth.

    The same numbers as those two functions give (to rounding: the product with W_E is taken a
    piece of the vocabulary at a time), without ever holding a row's whole gradient or gains: for a
    64-token row of Gemma's 262k vocabulary those are 64 MiB each, and forming them was a search's
    peak memory (bench/RESULTS.md section 23). A piece is `PIECE_BYTES`, or with gains one tile of the
    logits (`SubjectModel.logits_blocks`), whose memory the gains are computed in.
    """
    _, (grad_e,) = embedding_gradients(subject, [row], layer, neuron, position)
    embedding = embedding_matrix(subject)
    penalty = distance_penalty(embedding, row, grad_e, distance) if distance > 0 and 0 in weights else None

    def emit(start: int, stop: int, tokens: range, gains: torch.Tensor | None) -> None:
        grad = (grad_e[start:stop] @ embedding[tokens.start : tokens.stop].T).float()
        for w in weights:
            if w > 0 and gains is not None:
                consume(range(start, stop), w, tokens, grad + w * gains)
            elif w == 0 and penalty is not None:
                consume(range(start, stop), w, tokens, penalty(start, stop, tokens).neg_().add_(grad))
            else:
                consume(range(start, stop), w, tokens, grad)

    def emit_without_gains(start: int, stop: int) -> None:
        if start >= stop:
            return
        width = max(1, PIECE_BYTES // (4 * (stop - start)))
        for first in range(0, embedding.shape[0], width):
            emit(start, stop, range(first, min(embedding.shape[0], first + width)), None)

    if not any(w > 0 for w in weights):
        emit_without_gains(0, len(row))
        return
    covered = 0  # text positions handed over so far

    def with_gains(start: int, ids: range, tile: torch.Tensor) -> None:
        nonlocal covered
        emit_without_gains(covered, start)  # positions nothing predicts: gains of 0
        emit(start, start + len(tile), ids, tile)
        covered = max(covered, start + len(tile))

    _gain_tiles(subject, row, with_gains)
    emit_without_gains(covered, len(row))


def distance_penalty(
    embedding: torch.Tensor, row: list[int], grad_e: torch.Tensor, distance: float
) -> Callable[[int, int, range], torch.Tensor]:
    """Faster-GCG's regularizer (Li et al., 2024) for one row: `penalty(start, stop, tokens)` is
    [stop - start, len(tokens)], the Euclidean distance between each token's embedding (W_E's row)
    and that of the row's own token at each text position, times a per-position factor that makes
    one standard deviation of distance cost `distance` standard deviations of the gradient's scores
    there. The spreads are read from every 64th token of the vocabulary. The one-hot gradient is a
    first-order estimate around the current token, so a swap to a distant token is the least
    trustworthy (bench/RESULTS.md section 34 measures how often each kind of child rises)."""
    ids = torch.tensor(row, device=embedding.device)
    current = embedding[ids].float()  # [len(row), d_model]
    sample = embedding[::64].float()
    spread_grad = (grad_e.float() @ sample.T).std(dim=1)
    spread_distance = torch.cdist(current, sample).std(dim=1).clamp_min(1e-12)
    factor = distance * spread_grad / spread_distance  # [len(row)]
    # Every token's squared norm, once a ranking (a reduction: no [vocab, d_model] temporary).
    norms_sq = torch.linalg.vector_norm(embedding, dim=1, dtype=torch.float32).square()  # [d_vocab]
    current_sq = norms_sq[ids]

    def penalty(start: int, stop: int, tokens: range) -> torch.Tensor:
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, in place in the piece's own memory.
        out = current[start:stop] @ embedding[tokens.start : tokens.stop].float().T
        out.mul_(-2).add_(current_sq[start:stop, None]).add_(norms_sq[None, tokens.start : tokens.stop])
        out.clamp_min_(0).sqrt_()
        # The row's own token is at distance 0 exactly (the expansion above rounds to about sqrt(1e-7) there).
        own = ids[start:stop]
        inside = ((own >= tokens.start) & (own < tokens.stop)).nonzero().flatten()
        out[inside, own[inside] - tokens.start] = 0.0
        return out.mul_(factor[start:stop, None])

    return penalty


def _vocabulary_out(subject: SubjectModel) -> int:
    """The size of the model's logits: the unembedding's outputs (`d_vocab_out`), else W_E's rows."""
    size = getattr(subject.bridge.cfg, "d_vocab_out", None)
    return int(size) if isinstance(size, int) and size > 0 else embedding_matrix(subject).shape[0]

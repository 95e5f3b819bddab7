"""Token gradients through TransformerBridge, fluency, and the rules every proposed child obeys.

The tiny GPT-2 (random weights, 400 tokens) checks the machinery exactly and fast; the bundled
Gemma 3 270M checks what only a real model has: an embedding scale (sqrt(d_model)), a 262k
vocabulary with unused, special and byte-fallback tokens.
"""

from __future__ import annotations

import pytest
import torch

import neuron_search.services.model.gradient as gradient_module
import neuron_search.services.search.candidates as candidates_module
from transformers import AutoModelForCausalLM

from neuron_search.services.model.gradient import embedding_scale, fluency_gains, token_gradients
from neuron_search.services.search.candidates import (
    allowed_tokens,
    member_swaps,
    propose_children,
    propose_edits,
    rank_swaps,
    retokenizes,
    stacked_swaps,
)
from neuron_search.services.model.subject_model import LogitsBlock, SubjectModel, _logsumexp_tiles, _mean_losses, distinct_prefixes, predicting

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "1, 2, 4, 8",
    "What is the capital of France? Paris is the capital.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> SubjectModel:
    return SubjectModel.load(str(tiny_model_dir), "cpu")


@pytest.fixture(params=["tiny", "gemma"])
def model_and_layer(request) -> tuple[SubjectModel, int]:
    return (request.getfixturevalue("tiny"), 1) if request.param == "tiny" else (request.getfixturevalue("gemma"), 9)


def _swap(row: list[int], position: int, token: int) -> list[int]:
    return row[:position] + [token] + row[position + 1 :]


def test_embedding_scale_is_read_from_the_model(tiny, gemma) -> None:
    assert embedding_scale(tiny) == pytest.approx(1.0, rel=1e-6)
    assert embedding_scale(gemma) == pytest.approx(gemma.bridge.cfg.d_model**0.5, rel=1e-6)  # 25.298


@pytest.mark.parametrize("position", ["max", "last"])
def test_activation_through_the_injected_embedding_equals_measure(model_and_layer, position) -> None:
    subject, layer = model_and_layer
    neuron = 840 % subject.d_mlp
    rows = [subject.token_ids(p) for p in PROMPTS]  # three lengths: the batch is padded
    activations, grads = token_gradients(subject, rows, layer, neuron, position)
    measured = [m["activation"] for m in subject.measure(PROMPTS, layer, neuron, position)]
    assert activations.tolist() == pytest.approx(measured, abs=1e-5)
    vocabulary = subject.bridge.embed.original_component.weight.shape[0]
    assert [tuple(g.shape) for g in grads] == [(len(row), vocabulary) for row in rows]
    assert all(p.grad is None for p in subject.bridge.parameters())


def test_gradient_equals_the_derivative_along_a_swap(model_and_layer) -> None:
    """grad[p, new] - grad[p, old] is the derivative of the activation as the token at p slides from
    old to new in the model's own embedding space (central finite difference; no scale assumed)."""
    subject, layer = model_and_layer
    neuron = 840 % subject.d_mlp
    row = subject.token_ids(PROMPTS[0])
    activations, (grad,) = token_gradients(subject, [row], layer, neuron, "last")
    generator = torch.Generator().manual_seed(1)
    pairs = [(p, int(torch.randint(len(subject.tokenizer), (1,), generator=generator))) for p in (0, len(row) // 2, len(row) - 1)]
    step = 1e-2
    for position, new in pairs:
        tokens = torch.tensor([subject._with_bos(row), subject._with_bos(_swap(row, position, new))])
        embedded: list[torch.Tensor] = []

        def capture(e, hook):  # noqa: ARG001
            embedded.append(e.detach().clone())

        with torch.inference_mode():
            subject.bridge.run_with_hooks(tokens, fwd_hooks=[("hook_embed", capture)], stop_at_layer=layer + 1)
        old, new_embedding = embedded[0][:1], embedded[0][1:]
        values = []
        for t in (step, -step):
            read: list[float] = []

            def slide(e, hook, t=t):  # noqa: ARG001
                return old + t * (new_embedding - old)

            def keep(act, hook):  # noqa: ARG001
                read.append(float(act[0, -1, neuron]))

            with torch.inference_mode():
                subject.bridge.run_with_hooks(
                    tokens[:1], fwd_hooks=[("hook_embed", slide), (f"blocks.{layer}.mlp.hook_post", keep)], stop_at_layer=layer + 1
                )
            values.append(read[0])
        finite_difference = (values[0] - values[1]) / (2 * step)
        predicted = float(grad[position, new] - grad[position, row[position]])
        assert predicted == pytest.approx(finite_difference, rel=1e-2, abs=2e-6), (position, new)


@pytest.mark.parametrize("position", ["max", "last"])
def test_gradient_top_token_raises_the_activation_more_often_than_a_random_token(tiny, position) -> None:
    allowed = allowed_tokens(tiny, ascii_only=True)
    choices = torch.nonzero(allowed).flatten()
    generator = torch.Generator().manual_seed(0)
    count, length, layer = 200, 8, 1
    rows = [choices[torch.randint(len(choices), (length,), generator=generator)].tolist() for _ in range(count)]
    neurons = torch.randint(tiny.d_mlp, (count,), generator=generator).tolist()
    before, gradient_rows, random_rows = [], [], []
    for row, neuron in zip(rows, neurons):
        activation, (grad,) = token_gradients(tiny, [row], layer, neuron, position)
        before.append(float(activation))
        where = int(torch.randint(length, (1,), generator=generator))
        scores = grad[where].masked_fill(~allowed, -torch.inf)
        scores[row[where]] = -torch.inf
        gradient_rows.append(_swap(row, where, int(scores.argmax())))
        others = choices[choices != row[where]]
        random_rows.append(_swap(row, where, int(others[torch.randint(len(others), (1,), generator=generator)])))

    def raised(swapped: list[list[int]]) -> float:
        after = [float(token_gradients(tiny, [r], layer, n, position)[0]) for r, n in zip(swapped, neurons)]
        return sum(a > b for a, b in zip(after, before)) / count

    by_gradient, by_chance = raised(gradient_rows), raised(random_rows)
    assert by_gradient > by_chance + 0.2, f"gradient's top-1 raised {by_gradient:.0%}, a random token {by_chance:.0%}"


@pytest.mark.parametrize(("ascii_only", "swaps"), [(True, 1), (True, 2), (False, 3)])
def test_every_child_obeys_the_rules(tiny, ascii_only, swaps) -> None:
    allowed = allowed_tokens(tiny, ascii_only)
    row = tiny.token_ids(PROMPTS[2])
    _, (grad,) = token_gradients(tiny, [row], 1, 3, "max")
    positions = range(2, 9)
    children = propose_children(tiny, rank_swaps(row, grad, allowed, 32), torch.Generator().manual_seed(0), 64, 32, swaps, positions)
    assert len(children) >= 16, "nearly every child was rejected"
    assert len({tuple(c) for c in children} | {tuple(row)}) == len(children) + 1  # distinct, none the parent
    texts = tiny.tokenizer.batch_decode([[t] for t in range(len(tiny.tokenizer))])
    for child in children:
        changed = [i for i, (a, b) in enumerate(zip(child, row)) if a != b]
        assert len(child) == len(row) and len(changed) == swaps and set(changed) <= set(positions)
        for token in (child[i] for i in changed):
            assert allowed[token] and token not in tiny.tokenizer.all_special_ids and texts[token] != ""
            assert not ascii_only or (texts[token].isascii() and texts[token].isprintable())
        assert retokenizes(tiny, child)
        assert tiny.token_ids(tiny.tokenizer.decode(child)) == child


@pytest.mark.parametrize("ascii_only", [True, False])
def test_every_edit_inserts_or_deletes_one_token_where_allowed(tiny, ascii_only) -> None:
    """An edit changes the length by one, at one of the positions given (never after the peak), an
    inserted token is one the rules allow and among the gradient's top there, and every child
    retokenizes exactly."""
    allowed = allowed_tokens(tiny, ascii_only)
    row = tiny.token_ids(PROMPTS[2])
    _, (grad,) = token_gradients(tiny, [row], 1, 3, "max")
    positions, top_k = range(0, 6), 8
    children = propose_edits(tiny, rank_swaps(row, grad, allowed, top_k), torch.Generator().manual_seed(0), 64, top_k, positions, 64)
    inserted = [c for c in children if len(c) == len(row) + 1]
    deleted = [c for c in children if len(c) == len(row) - 1]
    assert len(inserted) >= 8 and len(deleted) >= 3 and len(inserted) + len(deleted) == len(children)
    assert len({tuple(c) for c in children}) == len(children)
    for child in inserted:
        at = next(i for i in range(len(row)) if child[i] != row[i])
        assert child[:at] + child[at + 1 :] == row  # one token in, the rest as it was
        # The inserted token sits at an allowed position (a run of equal tokens makes the place ambiguous).
        assert any(child[:p] + child[p + 1 :] == row for p in positions)
        scores = grad[at].masked_fill(~allowed, -torch.inf)
        assert child[at] in set(scores.topk(top_k).indices.tolist()) or child[at] == row[at]
        assert allowed[child[at]]
    for child in deleted:
        assert any(row[:p] + row[p + 1 :] == child for p in positions)
    for child in children:
        assert retokenizes(tiny, child)
    # A row at the token cap only shrinks; a row of one token only grows.
    assert all(len(c) == len(row) - 1 for c in propose_edits(tiny, rank_swaps(row, grad, allowed, top_k), torch.Generator().manual_seed(1), 16, top_k, positions, len(row)))
    one = row[:1]
    assert all(len(c) == 2 for c in propose_edits(tiny, rank_swaps(one, grad[:1], allowed, top_k), torch.Generator().manual_seed(1), 8, top_k, range(1), 64))


def test_children_take_the_top_of_the_gradient(tiny) -> None:
    """The activation is maximised: a child's new token is among the highest entries of the gradient
    (d activation / d one-hot) at its position, never the lowest."""
    allowed = allowed_tokens(tiny, ascii_only=True)
    row = tiny.token_ids(PROMPTS[2])
    _, (grad,) = token_gradients(tiny, [row], 1, 3, "last")
    for position in (1, 4, 7):
        scores = grad[position].masked_fill(~allowed, -torch.inf)
        scores[row[position]] = -torch.inf
        top = set(scores.topk(3).indices.tolist())
        generator = torch.Generator().manual_seed(position)
        children = propose_children(tiny, rank_swaps(row, grad, allowed, 3), generator, 32, 3, 1, range(position, position + 1))
        assert children and {child[position] for child in children} <= top


def test_ascii_only_allows_fewer_tokens_and_never_the_special_one(tiny) -> None:
    readable, anything = allowed_tokens(tiny, True), allowed_tokens(tiny, False)
    assert readable.sum() < anything.sum() and not (readable & ~anything).any()
    assert not anything[tiny.tokenizer.all_special_ids].any()


def test_gemma_allowed_tokens_and_children(gemma) -> None:
    """Gemma's vocabulary has what the tiny one lacks: <unused…> and chat tokens (added, special),
    byte-fallback tokens (`<0x41>` reads "A" but "A" tokenizes as another token), and newlines."""
    allowed = allowed_tokens(gemma, ascii_only=True)
    added = gemma.tokenizer.added_tokens_decoder
    special = [i for i, token in added.items() if token.special]
    assert len(special) > 6000 and not allowed[special].any()  # the <unused…> tokens among them
    assert not allowed[gemma.tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<0x41>", "\n"])].any()
    assert allowed[gemma.token_ids(" the")].all()
    row = gemma.token_ids("The quick brown fox jumps over the lazy dog")
    _, (grad,) = token_gradients(gemma, [row], 9, 840, "max")
    children = propose_children(gemma, rank_swaps(row, grad, allowed, 64), torch.Generator().manual_seed(0), 16, 64, 1, range(len(row)))
    assert children
    for child in children:
        (changed,) = [i for i, (a, b) in enumerate(zip(child, row)) if a != b]
        text = gemma.tokenizer.decode([child[changed]])
        assert allowed[child[changed]] and text.isascii() and text.isprintable()
        assert gemma.token_ids(gemma.tokenizer.decode(child)) == child


def test_retokenization_filter(tiny) -> None:
    row = tiny.token_ids("The capital")
    assert retokenizes(tiny, row)
    # The same text spelt with one token split in two: decoding gives the same text, which
    # tokenizes back to the merged token, so what would be measured is not this row.
    first = tiny.tokenizer.decode([row[0]])
    split = tiny.token_ids(first[:1]) + tiny.token_ids(first[1:]) + row[1:]
    assert tiny.tokenizer.decode(split) == tiny.tokenizer.decode(row) and split != row
    assert not retokenizes(tiny, split)


def test_cross_entropy_equals_the_transformers_loss_and_ignores_padding(tiny, tiny_model_dir) -> None:
    reference_model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    rows = [tiny.token_ids(p) for p in PROMPTS]
    batched = tiny.cross_entropy(rows)
    for row, loss in zip(rows, batched):
        ids = torch.tensor([tiny._with_bos(row)])
        with torch.inference_mode():
            reference = float(reference_model(ids, labels=ids).loss)  # mean over the tokens after BOS
        assert loss == pytest.approx(reference, abs=1e-4)
        assert tiny.cross_entropy([row]) == pytest.approx([loss], abs=1e-5)  # alone: no padding


def whole(block) -> torch.Tensor:
    """A `LogitsBlock`'s logits put together from its tiles (each copied before the next overwrites it)."""
    return torch.cat([tile.clone() for _, tile in block.tiles()], dim=1)


def test_logits_at_the_predicting_positions_are_those_of_the_full_pass(model_and_layer) -> None:
    # The unembedding runs on the selected positions only; it must give the full pass's logits there
    # (GPT-2's unembedding has a bias, Gemma's is tied to its embedding), whatever the blocks and tiles.
    subject, _ = model_and_layer
    rows = [subject.token_ids(p) for p in PROMPTS]
    tokens, offset = subject.padded(rows)
    where = predicting(tokens, offset, [len(row) for row in rows])
    assert where.sum() < where.numel()  # padding and last positions are left out
    with torch.inference_mode():
        full = subject.bridge(tokens, return_type="logits")
        assert subject._unembedding_gives_logits()
        selected = torch.cat([whole(block) for block in subject.logits_blocks(tokens, where, block=10_000)])
        # Blocks of 3 positions, tiles of 1,000 bytes: each tile is written over the last, read one at a time.
        blocks = list(subject.logits_blocks(tokens, where, block=3, tile_bytes=1000))
        tiled = [whole(block) for block in blocks]
        widths = [len(ids) for ids, _ in blocks[0].tiles()]
        # `at` reads single entries: the logits of a few tokens at every position.
        ids = torch.tensor([0, 7, full.shape[-1] - 1])
        picked = torch.cat([torch.stack([b.at(torch.arange(b.size), torch.full((b.size,), int(i))) for i in ids], 1) for b in blocks])
    assert selected.shape == (int(where.sum()), full.shape[-1])
    assert torch.allclose(selected, full[where], atol=1e-4, rtol=1e-4)
    assert len(tiled) > 1 and torch.allclose(torch.cat(tiled), selected, atol=1e-4, rtol=1e-4)
    assert len(widths) > 1 and sum(widths) == full.shape[-1] and max(widths) * 4 * 3 <= 1000
    assert torch.allclose(picked, full[where][:, ids], atol=1e-4, rtol=1e-4)


def test_the_tiled_logsumexp_is_torchs() -> None:
    # The cross-entropy reduces the logits a tile of the vocabulary at a time, each in its own memory:
    # the numbers must be torch's, rows of -inf and rows holding +inf included, whatever the tiles.
    logits = torch.randn(6, 5000, generator=torch.Generator().manual_seed(0)) * 8
    logits[1] = float("-inf")
    logits[2, 4321] = float("inf")
    logits[3, :2500] = float("-inf")  # its first tiles hold nothing
    expected = torch.logsumexp(logits, dim=-1)
    for width in (5000, 1000, 333, 1):
        got = _logsumexp_tiles(tile.clone() for tile in logits.split(width, dim=1))
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-5), width
        assert got[1] == float("-inf") and got[2] == float("inf")


def test_a_logits_block_takes_its_head_and_tile_buffer_together() -> None:
    # A head without a buffer for its tiles would read the unembedding's input as logits.
    head = torch.nn.Linear(4, 10, bias=False)
    rows = torch.randn(3, 4)
    with pytest.raises(ValueError, match="together"):
        LogitsBlock(rows, head)
    with pytest.raises(ValueError, match="together"):
        LogitsBlock(rows, tile=lambda size, width: torch.empty(size, width))
    block = LogitsBlock(rows, head, lambda size, width: torch.empty(size, width), tile_bytes=3 * 4 * 4)
    with torch.no_grad():
        assert torch.allclose(whole(block), head(rows))


def test_logits_changed_after_the_unembedding_are_found_and_used(tiny_model_dir) -> None:
    # A model whose logits are more than its unembedding (as Gemma 2's soft-capping is) must not
    # get the unembedding alone: the probe finds it, and cross-entropies come from the full logits.
    subject = SubjectModel.load(str(tiny_model_dir), "cpu")
    subject.bridge.add_hook("unembed.hook_out", lambda logits, hook: 2 * torch.tanh(logits / 2))
    rows = [subject.token_ids(p) for p in PROMPTS]
    tokens, offset = subject.padded(rows)
    where = predicting(tokens, offset, [len(row) for row in rows])
    with torch.inference_mode():
        full = subject.bridge(tokens, return_type="logits")
        reference = _mean_losses([LogitsBlock(full[where])], torch.arange(int(where.sum())), tokens, where)
    assert not subject._unembedding_gives_logits()
    assert subject.cross_entropy(rows) == pytest.approx(reference, abs=1e-5)
    fused = subject.measure(PROMPTS, 1, 3, "max", batch_size=8, fluency=True)
    assert [m["xent"] for m in fused] == pytest.approx(reference, abs=1e-5)


def test_losses_do_not_depend_on_how_many_positions_are_unembedded_at_a_time(tiny) -> None:
    # The logits come in blocks and tiles so that a big batch never holds all of them; blocks of 3
    # positions (prefixes shared across block edges) in tiles of 100 bytes must give what one block
    # of all of them gives.
    rows = [tiny.token_ids(p) for p in PROMPTS]
    tokens, offset = tiny.padded(rows)
    where = predicting(tokens, offset, [len(row) for row in rows])
    first, shared = distinct_prefixes(tokens, where)
    with torch.inference_mode():
        whole = _mean_losses(tiny.logits_blocks(tokens, first, block=10_000), shared, tokens, where)
        blocked = _mean_losses(tiny.logits_blocks(tokens, first, block=3, tile_bytes=100), shared, tokens, where)
        assert len(list(tiny.logits_blocks(tokens, first, block=3))) == -(-int(first.sum()) // 3)
    assert blocked == pytest.approx(whole, abs=1e-6)
    assert whole == pytest.approx(tiny.cross_entropy(rows), abs=1e-6)


def test_a_measurement_with_fluency_is_the_plain_measurement_plus_the_cross_entropy(tiny) -> None:
    # One forward pass run on to the logits gives both numbers: each must equal what its own pass gives.
    plain = tiny.measure(PROMPTS, 1, 3, "max", batch_size=3)
    fused = tiny.measure(PROMPTS, 1, 3, "max", batch_size=3, fluency=True)
    alone = tiny.cross_entropy([tiny.token_ids(p) for p in PROMPTS])
    for a, b, xent in zip(plain, fused, alone):
        assert a["xent"] is None
        assert b["activation"] == pytest.approx(a["activation"], abs=1e-6) and b["values"] == a["values"]
        assert b["xent"] == pytest.approx(xent, abs=1e-5)


def test_positions_with_one_prefix_are_unembedded_once_and_give_each_row_its_own_loss(model_and_layer) -> None:
    """Siblings share their parent's tokens before the swap: the logits there are computed once,
    and every row's cross-entropy is still what it is measured alone."""
    subject, layer = model_and_layer
    parent = subject.token_ids(PROMPTS[2])
    rows = [parent, _swap(parent, 3, parent[5]), _swap(parent, 6, parent[1]), parent[:4], subject.token_ids(PROMPTS[1])]
    tokens, offset = subject.padded(rows)
    where = predicting(tokens, offset, [len(row) for row in rows])
    first, shared = distinct_prefixes(tokens, where)
    distinct = {tuple(tokens[i, : t + 1].tolist()) for i, t in where.nonzero().tolist()}
    assert int(first.sum()) == len(distinct) <= int(where.sum()) - 3 * 4  # rows 1-3 repeat row 0's first 4 positions
    positions = where.nonzero().tolist()
    firsts = first.nonzero().tolist()
    for (i, t), j in zip(positions, shared.tolist()):  # each position points at a first with its very prefix
        fi, ft = firsts[j]
        assert tokens[i, : t + 1].tolist() == tokens[fi, : ft + 1].tolist()
    prompts = [subject.decode(row) for row in rows]
    together = subject.measure(prompts, layer, 3, "max", batch_size=8, fluency=True)
    alone = [subject.cross_entropy([row])[0] for row in rows]
    assert [m["xent"] for m in together] == pytest.approx(alone, abs=1e-4)
    assert subject.cross_entropy(rows) == pytest.approx(alone, abs=1e-4)


def test_fluency_gain_of_a_swap_at_the_last_token_is_its_exact_cross_entropy_change(model_and_layer) -> None:
    """The last token's loss term is the only one a swap there changes, so the gain is exact there;
    at an earlier position it is the change of that position's own term (later terms move too)."""
    subject, _ = model_and_layer
    rows = [subject.token_ids(p) for p in PROMPTS]  # three lengths: the batch is padded
    gains = fluency_gains(subject, rows)
    generator = torch.Generator().manual_seed(3)
    for row, gain in zip(rows, gains):
        assert tuple(gain.shape) == (len(row), subject.bridge.embed.original_component.weight.shape[0])
        assert gain[torch.arange(len(row)), torch.tensor(row)].abs().max() == 0  # the current tokens
        last = len(row) - 1
        news = torch.randint(len(subject.tokenizer), (4,), generator=generator).tolist()
        (before,) = subject.cross_entropy([row])
        after = subject.cross_entropy([_swap(row, last, new) for new in news])
        for new, loss in zip(news, after):
            assert before - loss == pytest.approx(float(gain[last, new]), abs=1e-4), new


def test_fluency_gains_are_the_same_whatever_blocks_the_logits_come_in(model_and_layer, monkeypatch) -> None:
    """Each row's gains are filled tile by tile as the logits come (`logits_blocks`): blocks of 3
    positions, which cut rows apart and span them, in tiles of 1,000 bytes, give what one tile gives."""
    subject, _ = model_and_layer
    rows = [subject.token_ids(p) for p in PROMPTS]
    whole = fluency_gains(subject, rows)
    blocks = type(subject).logits_blocks
    monkeypatch.setattr(type(subject), "logits_blocks", lambda self, tokens, where, hooks=(): blocks(self, tokens, where, hooks, block=3, tile_bytes=1000))
    cut = fluency_gains(subject, rows)
    assert len(cut) == len(whole)
    for a, b in zip(cut, whole):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)  # the unembedding of 3 rows may round differently


def test_fluency_gains_without_a_bos_token_leave_the_first_position_alone(tiny) -> None:
    """A model with no BOS predicts nothing at the first text token: its gains are 0 there, the rest
    still match the cross-entropy, which then averages over one token fewer."""
    row = tiny.token_ids(PROMPTS[1])
    bos = tiny._bos
    try:
        tiny._bos = None
        (gain,) = fluency_gains(tiny, [row])
        (before,) = tiny.cross_entropy([row])
        (after,) = tiny.cross_entropy([_swap(row, len(row) - 1, 7)])
    finally:
        tiny._bos = bos
    assert gain[0].abs().max() == 0
    assert before - after == pytest.approx(float(gain[-1, 7]), abs=1e-4)


def test_a_heavy_fluency_weight_proposes_swaps_that_read_better(gemma) -> None:
    """What slot i ranks by, gradient + weight * gain: with a weight of 10 the children read clearly
    better (lower cross-entropy) than children ranked by the activation's gradient alone. (Both read
    worse than a fluent parent on average: a swap also changes how the later tokens are predicted.)"""
    allowed = allowed_tokens(gemma, ascii_only=True)
    for text in ("The committee said that the report would be published in March", "def parse(self, value): return int(value)"):
        row = gemma.token_ids(text)
        _, (grad,) = token_gradients(gemma, [row], 9, 840, "last")
        (gain,) = fluency_gains(gemma, [row])
        mean_after = {}
        for name, scores in {"activation only": grad, "weight 10": grad + 10 * gain}.items():
            children = propose_children(gemma, rank_swaps(row, scores, allowed, 16), torch.Generator().manual_seed(0), 24, 16, 1)
            mean_after[name] = sum(gemma.cross_entropy(children)) / len(children)
        assert mean_after["weight 10"] < mean_after["activation only"] - 0.5, (text, mean_after)


def test_member_swaps_are_each_rows_own_and_computed_once(tiny, monkeypatch) -> None:
    """A member's ranked swaps are `rank_swaps` of its own gradient (plus the weight times its own
    gains), bit for bit, whichever rows come with it; a (row, weight) asked for again is not computed
    again, and one row in two slots takes one gradient pass."""
    rows = [tiny.token_ids(p) for p in PROMPTS]
    allowed = allowed_tokens(tiny, ascii_only=True)
    monkeypatch.setattr(candidates_module, "_members", type(candidates_module._members)())
    calls: list[list[float]] = []
    real = candidates_module.swap_scores
    monkeypatch.setattr(candidates_module, "swap_scores", lambda s, r, w, *a: calls.append(list(w)) or real(s, r, w, *a))
    first = member_swaps(tiny, [(rows[0], 0.0), (rows[1], 2.0), (rows[1], 0.0)], 1, 3, "max", allowed, 8)
    assert calls == [[0.0], [0.0, 2.0]]  # rows[1] in two slots: one gradient
    again = member_swaps(tiny, [(rows[2], 2.0), (rows[1], 2.0)], 1, 3, "max", allowed, 8)
    assert calls == [[0.0], [0.0, 2.0], [2.0]] and again[1] is first[1]
    for (row, weight), got in zip([(rows[0], 0.0), (rows[1], 2.0), (rows[1], 0.0), (rows[2], 2.0)], first + again[:1]):
        (grad,) = token_gradients(tiny, [row], 1, 3, "max")[1]
        score = grad + weight * fluency_gains(tiny, [row])[0] if weight else grad
        want = rank_swaps(row, score, allowed, 8)
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.scores, want.scores)
        assert torch.equal(got.current, want.current) and got.row == tuple(row)
    # Another neuron is another gradient.
    other = member_swaps(tiny, [(rows[0], 0.0)], 1, 4, "max", allowed, 8)
    assert len(calls) == 4 and not torch.equal(other[0].scores, first[0].scores)


def test_member_swaps_from_pieces_rank_as_the_whole_rows_scores(gemma, monkeypatch) -> None:
    """A member's scores come a piece at a time (`swap_scores`): pieces of 1,000 token ids, and the
    gains from logits blocks of 5 positions in tiles of 1,000 token ids, rank the swaps of an 18-token row as its whole gradient
    plus the weight times its whole gains do (to rounding: a product of 1,000 columns may round
    otherwise than one of 262k)."""
    row = gemma.token_ids("The configuration file could not be read because the path given to the loader does not exist")
    assert len(row) > 16
    allowed = allowed_tokens(gemma, ascii_only=True)
    monkeypatch.setattr(candidates_module, "_members", type(candidates_module._members)())
    monkeypatch.setattr(gradient_module, "PIECE_BYTES", 4 * 1000 * len(row))
    blocks = type(gemma).logits_blocks
    monkeypatch.setattr(type(gemma), "logits_blocks", lambda self, tokens, where, hooks=(): blocks(self, tokens, where, hooks, block=5, tile_bytes=4 * 5 * 1000))
    lead, readable = member_swaps(gemma, [(row, 0.0), (row, 3.0)], 9, 840, "max", allowed, 16)
    (grad,) = token_gradients(gemma, [row], 9, 840, "max")[1]
    (gain,) = fluency_gains(gemma, [row])
    for got, score in ((lead, grad), (readable, grad + 3.0 * gain)):
        want = rank_swaps(row, score, allowed, 16)
        assert got.row == want.row and got.tokens.shape == want.tokens.shape
        assert torch.allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        assert torch.allclose(got.current, want.current, rtol=1e-5, atol=1e-5)
        # Each token ranked is one the whole row's scores rank as high (a near tie may swap two).
        assert torch.allclose(score.gather(1, got.tokens), want.scores, rtol=1e-5, atol=1e-5)


def test_lead_distance_lowers_the_gradient_alone_by_scaled_embedding_distance(tiny, monkeypatch) -> None:
    """`--lead-distance`: the gradient-alone ranking (weight 0) is the gradient less, per position, the factor
    times each token's embedding distance to the row's own token, the factor making one spread of
    distance cost `distance` spreads of gradient (both read from every 64th token); a readable slot's
    ranking is unchanged. Computed in pieces of 50 token ids, checked against the whole row at once."""
    row = tiny.token_ids(PROMPTS[0])
    allowed = allowed_tokens(tiny, ascii_only=True)
    monkeypatch.setattr(candidates_module, "_members", type(candidates_module._members)())
    monkeypatch.setattr(gradient_module, "PIECE_BYTES", 4 * 50 * len(row))
    lead, readable = member_swaps(tiny, [(row, 0.0), (row, 2.0)], 1, 3, "max", allowed, 8, distance=1.5)
    plain, plain_readable = member_swaps(tiny, [(row, 0.0), (row, 2.0)], 1, 3, "max", allowed, 8)
    (grad,) = token_gradients(tiny, [row], 1, 3, "max")[1]
    embedding = gradient_module.embedding_matrix(tiny).float()
    own = embedding[row]
    distances = torch.cdist(own, embedding, compute_mode="donot_use_mm_for_euclid_dist")  # [len(row), d_vocab], exact
    sample = embedding[::64]
    factor = 1.5 * (grad[:, ::64]).std(dim=1) / torch.cdist(own, sample).std(dim=1)
    want = rank_swaps(row, grad - factor[:, None] * distances, allowed, 8)
    assert torch.equal(lead.tokens, want.tokens)
    assert torch.allclose(lead.scores, want.scores, rtol=1e-4, atol=1e-4)
    assert torch.allclose(lead.current, grad.gather(1, torch.tensor(row)[:, None])[:, 0], atol=1e-4)  # its own token: distance 0
    assert not torch.equal(lead.tokens, plain.tokens)  # the penalty changed the ranking
    assert torch.equal(readable.tokens, plain_readable.tokens) and torch.equal(readable.scores, plain_readable.scores)
    # Far more weight on distance: every position's top tokens are the allowed ones nearest its own token
    # (where the gradient has a spread at all: after the peak it is 0, and so is the penalty).
    (near,) = member_swaps(tiny, [(row, 0.0)], 1, 3, "max", allowed, 8, distance=1e6)
    moving = [p for p in range(len(row)) if factor[p] > 0]
    assert len(moving) >= 3
    for p in moving:
        nearest = distances[p].masked_fill(~allowed, torch.inf).topk(9, largest=False).indices
        assert set(near.tokens[p].tolist()) == set(nearest.tolist())


def test_ranked_swaps_hold_the_top_of_the_scores_and_little_memory(gemma) -> None:
    """Per position the allowed tokens of highest score, best first, one more than top_k (the row's
    own token may be among them); a 9-token Gemma row's ranked swaps are kilobytes, not the 9 MB
    of its gradient."""
    allowed = allowed_tokens(gemma, ascii_only=True)
    row = gemma.token_ids("The quick brown fox jumps over the lazy dog")
    _, (grad,) = token_gradients(gemma, [row], 9, 840, "max")
    ranked = rank_swaps(row, grad, allowed, 16)
    assert ranked.tokens.shape == (len(row), 17) and ranked.nbytes < 4096 < grad.nbytes // 1000
    for p in range(len(row)):
        masked = grad[p].masked_fill(~allowed, -torch.inf)
        assert ranked.tokens[p].tolist() == masked.topk(17).indices.tolist()
        assert float(ranked.current[p]) == float(grad[p, row[p]])


def test_member_memo_keeps_to_its_bytes(tiny, monkeypatch) -> None:
    monkeypatch.setattr(candidates_module, "_members", type(candidates_module._members)())
    rows = [tiny.token_ids(p) for p in PROMPTS]
    allowed = allowed_tokens(tiny, ascii_only=True)
    one = member_swaps(tiny, [(rows[0], 0.0)], 1, 3, "max", allowed, 8, max_bytes=1)
    member_swaps(tiny, [(rows[1], 0.0)], 1, 3, "max", allowed, 8)
    memo = candidates_module._members[tiny]
    assert len(memo.entries) == 1 and memo.bytes == next(iter(memo.entries.values())).nbytes  # rows[0] dropped
    assert member_swaps(tiny, [(rows[0], 0.0)], 1, 3, "max", allowed, 8)[0] is not one[0]


def test_stacked_swaps_add_the_measured_winners_swaps_to_the_new_lead(tiny) -> None:
    """The parent's children that beat it each changed one token; the new lead is the best of them.
    Stacked children add the others' swaps to it, best first and cumulatively, skipping a swap at
    the lead's own position, an edit (another length) and a child with two changes."""
    allowed = allowed_tokens(tiny, ascii_only=True)
    parent = tiny.token_ids("The quick brown fox jumps over the lazy dog.")
    token = lambda text: tiny.token_ids(text)[0]  # noqa: E731
    swap = lambda row, p, t: row[:p] + [t] + row[p + 1 :]  # noqa: E731
    lead = swap(parent, 1, token(" slow"))
    improved = [
        lead,
        swap(parent, 3, token(" cat")),
        swap(parent, 1, token(" red")),  # the lead's position: already changed
        parent[:5] + parent[6:],  # an edit
        swap(swap(parent, 2, token(" red")), 4, token(" runs")),  # two changes
        swap(parent, 6, token(" a")),
    ]
    rows = stacked_swaps(tiny, parent, lead, improved, 4, allowed)
    assert rows == [swap(lead, 3, token(" cat")), swap(swap(lead, 3, token(" cat")), 6, token(" a"))]
    assert stacked_swaps(tiny, parent, lead, improved, 1, allowed) == rows[:1]
    assert stacked_swaps(tiny, parent, lead, improved, 0, allowed) == []
    assert stacked_swaps(tiny, parent, lead[:-1], improved, 4, allowed) == []  # the lead changed length


@pytest.mark.parametrize("swaps", [1, 2])
def test_uniform_positions_spread_children_over_positions_and_keep_each_positions_top(tiny, swaps) -> None:
    """GCG's draw (--lead-uniform-positions): every child changes `swaps` positions, each to one of the
    top_k tokens the gradient ranks highest at that position; the positions are drawn uniformly, so
    children reach every allowed position, where the default's pool of the top_k (position, token)
    pairs over all positions leaves some of them out."""
    allowed = allowed_tokens(tiny, True)
    row = tiny.token_ids(PROMPTS[2])
    _, (grad,) = token_gradients(tiny, [row], 1, 3, "last")  # every token moves the last one
    positions, top_k = range(1, len(row)), 4
    ranked = rank_swaps(row, grad, allowed, top_k)
    uniform = propose_children(tiny, ranked, torch.Generator().manual_seed(0), 64, top_k, swaps, positions, uniform_positions=True)
    pooled = propose_children(tiny, ranked, torch.Generator().manual_seed(0), 64, top_k, swaps, positions)
    assert len(uniform) >= 32
    changed_at: set[int] = set()
    for child in uniform:
        changed = [i for i, (a, b) in enumerate(zip(child, row)) if a != b]
        assert len(child) == len(row) and len(changed) == swaps and set(changed) <= set(positions)
        for i in changed:
            scores = grad[i].masked_fill(~allowed, -torch.inf)
            scores[row[i]] = -torch.inf
            assert scores[child[i]] >= scores.topk(top_k).values[-1]
        changed_at |= set(changed)
    assert changed_at == set(positions)
    assert {i for c in pooled for i, (a, b) in enumerate(zip(c, row)) if a != b} < set(positions)

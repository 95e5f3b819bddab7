"""Which tokens a gradient search may propose, and how it draws children from a member's ranked swaps.

The rules of the search (issue 33's text-only findings among them), over the maths of
services/model/gradient.py: `allowed_tokens` (text tokens only: no special or added token, nothing
that does not tokenize back to itself), `rank_swaps` / `member_swaps` (a member's best swaps by its
gradient plus its fluency weight times its fluency gains, remembered per model), `propose_children`
(swaps at the best (position, token) pairs, or GCG's uniform positions), `propose_edits` (insertions
and deletions) and `stacked_swaps` (the winners' swaps stacked onto a new lead). Rows hold a prompt's
text tokens only; BOS is never swapped.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from neuron_search.services.model.gradient import embedding_matrix, swap_scores
from neuron_search.services.model.subject_model import SubjectModel
from neuron_search.services.model.text_tokens import not_text_ids

_usable: weakref.WeakKeyDictionary[SubjectModel, dict[bool, tuple[list[str], list[bool]]]] = weakref.WeakKeyDictionary()
_allowed: weakref.WeakKeyDictionary[SubjectModel, dict[tuple[bool, bool], torch.Tensor]] = weakref.WeakKeyDictionary()
# Each population member's ranked swaps (`member_swaps`), kept while it stays in the population.
_members: weakref.WeakKeyDictionary[SubjectModel, _MemberMemo] = weakref.WeakKeyDictionary()
_members_lock = threading.Lock()
# Tokens decoded and tokenized again per call when the vocabulary is first read (`_usable_tokens`).
_VOCABULARY_CHUNK = 8192


@dataclass(frozen=True)
class RankedSwaps:
    """A row's best swaps by one score (the activation's gradient, plus a fluency weight times the
    fluency gains): per text position, the allowed tokens with the highest scores, best first, and
    the score of the row's own token there. A swap old -> new is predicted to add
    scores[p, j] - current[p] where tokens[p, j] = new. Kept instead of the [len(row), d_vocab]
    scores they come from (21 MB for a 20-token row of Gemma's 262k vocabulary), so a population
    costs kilobytes, whatever its length."""

    tokens: torch.Tensor  # [len(row), k] long: allowed tokens, highest score first
    scores: torch.Tensor  # [len(row), k] float
    current: torch.Tensor  # [len(row)] float: the score of the row's own token
    row: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.tokens.nbytes + self.scores.nbytes + self.current.nbytes


def rank_swaps(row: list[int], score: torch.Tensor, allowed: torch.Tensor, top_k: int) -> RankedSwaps:
    """The `top_k + 1` allowed tokens a position with the highest `score` ([len(row), d_vocab]; one
    more than asked, since a row's own token may be among them and a swap never keeps it)."""
    if score.shape[0] != len(row):
        raise ValueError(f"scores for {score.shape[0]} positions, row of {len(row)}")
    columns = allowed.to(score.device).nonzero()[:, 0]
    return _top_swaps(row, *_at_columns(row, score, columns), columns, top_k)


def _at_columns(row: Sequence[int], full: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`full` ([len(row), d_vocab]) at the allowed `columns` only (55% of Gemma's vocabulary with the
    ASCII rule: a smaller copy than a masked score, and a faster top-k), and at the row's own tokens."""
    return full.index_select(1, columns), full.gather(1, torch.tensor(list(row), device=full.device)[:, None])[:, 0]


def _top_swaps(row: Sequence[int], scores: torch.Tensor, current: torch.Tensor, columns: torch.Tensor, top_k: int) -> RankedSwaps:
    """`rank_swaps` from the scores at the allowed `columns` and the scores of the row's own tokens."""
    k = min(top_k + 1, len(columns))
    if k < 1:
        raise ValueError("no allowed token to swap in")
    values, picked = scores.topk(k, dim=-1)
    return RankedSwaps(columns[picked].cpu(), values.float().cpu(), current.float().cpu(), tuple(row))


class _MemberMemo:
    """Least recently used first, bounded by the bytes its values hold."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, RankedSwaps] = OrderedDict()
        self.bytes = 0

    def get(self, key: tuple) -> RankedSwaps | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: tuple, value: RankedSwaps) -> None:
        if key in self.entries:
            return
        self.entries[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.nbytes


def member_swaps(
    subject: SubjectModel,
    members: list[tuple[list[int], float]],
    layer: int,
    neuron: int,
    position: str,
    allowed: torch.Tensor,
    top_k: int,
    max_bytes: int = 64 << 20,
    distance: float = 0.0,
) -> list[RankedSwaps]:
    """Per (row, fluency weight), the row's `rank_swaps` by its `token_gradients` gradient plus the
    weight times its `fluency_gains` (a weight of 0: the gradient alone, and no gains computed, less
    `distance` times the swap's embedding distance, `distance_penalty`), each computed for the row
    alone (`swap_scores`) and remembered per model for the next call.

    A population member usually stays for many iterations (a slot changes only when a child beats
    it), so most rows here were asked for before. Computed alone, a row's values never depend on
    which other rows were asked with it, or on whether they were remembered: a resumed run proposes
    the same children as one that never stopped. A row's full [len(row), d_vocab] gradient and gains
    are never held: its scores come a piece of the vocabulary at a time and are cut to their top at once.
    At most `max_bytes` of ranked swaps are kept, the least recently used dropped first.
    """
    with _members_lock:
        memo = _members.setdefault(subject, _MemberMemo(max_bytes))
    allowed_key = hash(allowed.cpu().numpy().tobytes())
    out: list[RankedSwaps | None] = [None] * len(members)
    # Row by row, so that one row's scores are formed at a time, however many members are new; one
    # gradient pass a row, shared by the members of equal rows.
    by_row: dict[tuple[int, ...], list[int]] = {}
    for index, (row, _) in enumerate(members):
        by_row.setdefault(tuple(row), []).append(index)
    columns = allowed.nonzero()[:, 0]
    for ids, indices in by_row.items():
        keys = {index: (layer, neuron, position, ids, float(members[index][1]), top_k, allowed_key, distance) for index in indices}
        with _members_lock:
            for index, key in keys.items():
                out[index] = memo.get(key)
        missing = sorted({key[4] for index, key in keys.items() if out[index] is None})
        if not missing:
            continue
        ranked = _ranked_row(subject, list(ids), missing, layer, neuron, position, columns, top_k, distance)
        with _members_lock:
            for index, key in keys.items():
                if out[index] is None:
                    out[index] = ranked[key[4]]
                    memo.put(key, out[index])
    return out  # type: ignore[return-value] (every index was filled)


def _ranked_row(
    subject: SubjectModel,
    row: list[int],
    weights: list[float],
    layer: int,
    neuron: int,
    position: str,
    columns: torch.Tensor,
    top_k: int,
    distance: float = 0.0,
) -> dict[float, RankedSwaps]:
    """Per weight, `rank_swaps` of the row's `swap_scores`, taken piece by piece: each piece's scores are
    cut to the allowed `columns` in it and merged into a running top, so the row's full
    [len(row), d_vocab] scores are never held."""
    k = min(top_k + 1, len(columns))
    if k < 1:
        raise ValueError("no allowed token to swap in")
    own = torch.tensor(row)
    tops: dict[float, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {w: {} for w in weights}  # weight -> first position -> (scores, tokens)
    current = {w: torch.zeros(len(row)) for w in weights}
    allowed_in: dict[tuple[int, int], torch.Tensor] = {}  # a piece's tokens -> its allowed columns, from its first

    def take(positions: range, weight: float, tokens: range, score: torch.Tensor) -> None:
        mine = own[positions.start : positions.stop]
        inside = (mine >= tokens.start) & (mine < tokens.stop)
        if inside.any():
            at = inside.nonzero()[:, 0]
            current[weight][positions.start + at] = score[at.to(score.device), (mine[at] - tokens.start).to(score.device)].float().cpu()
        piece = (tokens.start, tokens.stop)
        if piece not in allowed_in:
            allowed_in[piece] = columns[(columns >= tokens.start) & (columns < tokens.stop)] - tokens.start
        on = allowed_in[piece].to(score.device)
        if len(on) == 0:
            return
        values, picked = score.index_select(1, on).topk(min(k, len(on)), dim=-1)
        values, picked = values.float().cpu(), (on[picked] + tokens.start).cpu()
        before = tops[weight].get(positions.start)
        if before is not None:
            values, picked = torch.cat([before[0], values], dim=1), torch.cat([before[1], picked], dim=1)
            values, order = values.topk(min(k, values.shape[1]), dim=-1)
            picked = picked.gather(1, order)
        tops[weight][positions.start] = (values, picked)

    swap_scores(subject, row, weights, layer, neuron, position, take, distance)
    ranked: dict[float, RankedSwaps] = {}
    for w in weights:
        blocks = [tops[w][start] for start in sorted(tops[w])]
        ranked[w] = RankedSwaps(torch.cat([t for _, t in blocks]), torch.cat([v for v, _ in blocks]), current[w], tuple(row))
    return ranked


def _usable_tokens(subject: SubjectModel, allow_added_tokens: bool = False) -> tuple[list[str], list[bool]]:
    """Every token's text, and whether a prompt may contain it at all.

    Never: the tokenizer's special tokens and, unless `allow_added_tokens`, every added token,
    special or not (`not_text_ids`: Gemma's 6,242 `<unused…>`, `<start_of_turn>`, and the
    unflagged `<start_of_image>`, `[multimodal]` and markup tags such as `<b>`, whose ASCII names
    round-trip when the tokenizer reads them as the tokens), tokens whose text is empty, and tokens
    that tokenizing their own text does not give back (Gemma's byte-fallback tokens: `<0x41>` reads
    "A", which tokenizes as the token "A"; GPT-2's partial UTF-8 bytes). A child holding one of those
    could never pass the retokenization filter, so proposing it would waste the child. Gemma's
    whitespace runs (added tokens that are only newlines or tabs) are text, and may be proposed.
    """
    with subject.exclusive:
        cached = _usable.setdefault(subject, {}).get(allow_added_tokens)
        if cached is not None:
            return cached
        tokenizer = subject.tokenizer
        size = min(len(tokenizer), embedding_matrix(subject).shape[0])
        # Control tokens are excluded by id, not left to the round trip: their names come back as
        # other tokens here, but a vocabulary that also holds that text as an ordinary token would
        # give the control token's id back.
        excluded = not_text_ids(tokenizer, allow_added_tokens)
        texts: list[str] = []
        usable: list[bool] = []
        # Tokenized as `SubjectModel.token_ids` tokenizes a prompt, in batches: the whole vocabulary
        # in one call left 0.2 GiB of the tokenizer's working memory with the process for good.
        for start in range(0, size, _VOCABULARY_CHUNK):
            ids = range(start, min(size, start + _VOCABULARY_CHUNK))
            part = tokenizer.batch_decode([[i] for i in ids])
            again = subject.encode(part, allow_added_tokens)
            usable += [i not in excluded and text != "" and row == [i] for i, text, row in zip(ids, part, again)]
            texts += part
        _usable[subject][allow_added_tokens] = (texts, usable)
        return texts, usable


def allowed_tokens(subject: SubjectModel, ascii_only: bool, allow_added_tokens: bool = False) -> torch.Tensor:
    """A [d_vocab] boolean mask of the tokens a proposed child may hold (see `_usable_tokens`).

    With `ascii_only`, only tokens whose text is printable ASCII (letters, digits, punctuation and
    spaces). Newlines and tabs are left out too: a prompt is one line wherever it is shown or
    handed on (the LLM's list of prompts, one a line, the report's tables), and nanoGCG's default
    draws the same line. Added and control tokens are never allowed unless `allow_added_tokens`
    (whatever `ascii_only` says: their names are ASCII). Tokens past the tokenizer's length (a
    vocabulary padded for speed) are never allowed. Computed once per model and setting (the first
    call decodes and re-encodes the whole vocabulary: about 6 s for Gemma's 262k tokens on 2 CPU
    cores).
    """
    with subject.exclusive:
        cached = _allowed.setdefault(subject, {})
        key = (ascii_only, allow_added_tokens)
        if key not in cached:
            texts, usable = _usable_tokens(subject, allow_added_tokens)
            keep = [ok and (not ascii_only or (text.isascii() and text.isprintable())) for text, ok in zip(texts, usable)]
            mask = torch.zeros(embedding_matrix(subject).shape[0], dtype=torch.bool)
            mask[: len(keep)] = torch.tensor(keep, dtype=torch.bool)
            cached[key] = mask
        return cached[key]


def _retokenizing(subject: SubjectModel, rows: list[list[int]], allow_added_tokens: bool = False) -> list[bool]:
    """For each row: does decoding it and tokenizing the text (as it will be measured) give back
    exactly these ids?"""
    if not rows:
        return []
    with subject.exclusive:
        texts = subject.tokenizer.batch_decode(rows)
        again = subject.encode(texts, allow_added_tokens)
    return [ids == row for ids, row in zip(again, rows)]


def _retokenizing_rows(subject: SubjectModel, rows: list[list[int]], allow_added_tokens: bool) -> list[list[int]]:
    """The rows, in order, that are measured as their own ids (`_retokenizing`): the children a draw keeps."""
    return [row for row, ok in zip(rows, _retokenizing(subject, rows, allow_added_tokens)) if ok]


def retokenizes(subject: SubjectModel, row: list[int], allow_added_tokens: bool = False) -> bool:
    """Whether the prompt a row decodes to is measured as these very tokens: otherwise what would be
    measured is not what was optimised."""
    return _retokenizing(subject, [row], allow_added_tokens)[0]


def propose_children(
    subject: SubjectModel,
    ranked: RankedSwaps,
    rng: torch.Generator,
    children: int,
    top_k: int,
    swaps: int,
    positions: range | None = None,
    tried: Callable[[list[int]], bool] | None = None,
    allow_added_tokens: bool = False,
    uniform_positions: bool = False,
) -> list[list[int]]:
    """Up to `children` distinct children of a row of text tokens (`ranked.row`), each with `swaps`
    tokens at distinct positions (from `positions`, all by default) changed.

    The swaps are drawn uniformly from the `top_k` (position, token) pairs whose predicted gain,
    score[p, new] - score[p, current], is highest over all the positions together: a position where
    the gradient promises little gets few children or none, one where it promises much gets many
    (GCG draws a position uniformly first; at a budget of a few thousand prompts, ranking across
    positions reached higher activations, bench/RESULTS.md section 15). Only allowed tokens (those
    `ranked` was made from), never the current one, so no child equals the parent. With `tried`
    (has this row been measured?), a child already measured is drawn again instead, a few times at
    most, so a member that stays in the population keeps proposing new children. Children that do
    not retokenize exactly are dropped, so fewer than `children` can come back (measured as
    `allow_added_tokens` says). `rng` is a CPU generator. With `uniform_positions` (GCG's draw), each
    swap's position is drawn uniformly from `positions` instead, then its token uniformly from the
    `top_k` allowed tokens of highest predicted gain there.
    """
    row = list(ranked.row)
    positions = range(len(row)) if positions is None else positions
    if not set(positions) <= set(range(len(row))):
        raise ValueError(f"positions {positions} reach outside the row's {len(row)} tokens")
    if not 1 <= swaps <= len(positions):
        raise ValueError(f"swaps must be between 1 and the {len(positions)} positions that may change, not {swaps}")
    where = torch.tensor(list(positions), dtype=torch.long)
    candidates = ranked.tokens[where]
    gains = ranked.scores[where] - ranked.current[where][:, None]
    gains[candidates == torch.tensor(row)[where][:, None]] = -torch.inf  # never the current token
    if uniform_positions:
        return _uniform_children(subject, row, where, candidates, gains, rng, children, top_k, swaps, tried, allow_added_tokens)
    # At most top_k / swaps pairs a position, so that a child can find `swaps` distinct positions
    # in the pool; never more pairs than there are allowed tokens other than the current ones.
    per_position, order = gains.topk(min(-(-top_k // swaps), gains.shape[1]), dim=-1)
    tokens = candidates.gather(1, order)
    k = min(top_k, int(torch.isfinite(per_position).sum()))
    if k < 1:
        raise ValueError("no allowed token to swap in")
    pool = per_position.flatten().topk(k).indices
    at = where[pool // per_position.shape[1]].tolist()
    token = tokens.flatten()[pool].tolist()

    proposed: dict[tuple[int, ...], None] = {}  # a dict keeps the order in which children were drawn
    for _ in range(children * 4):
        if len(proposed) == children:
            break
        child, changed = list(row), set()
        for j in torch.randperm(k, generator=rng).tolist():
            if at[j] not in changed:
                changed.add(at[j])
                child[at[j]] = token[j]
                if len(changed) == swaps:
                    break
        if len(changed) < swaps or tuple(child) in proposed or (tried is not None and tried(child)):
            continue  # (fewer positions than swaps in the pool, or drawn before)
        proposed[tuple(child)] = None
    return _retokenizing_rows(subject, [list(child) for child in proposed], allow_added_tokens)


def _uniform_children(
    subject: SubjectModel,
    row: list[int],
    where: torch.Tensor,
    candidates: torch.Tensor,
    gains: torch.Tensor,
    rng: torch.Generator,
    children: int,
    top_k: int,
    swaps: int,
    tried: Callable[[list[int]], bool] | None,
    allow_added_tokens: bool,
) -> list[list[int]]:
    """`propose_children` with GCG's draw: positions uniformly, then a token among a position's top_k."""
    values, order = gains.topk(min(top_k, gains.shape[1]), dim=-1)
    tokens = candidates.gather(1, order)
    counts = torch.isfinite(values).sum(dim=1)  # the current token (-inf) is never among them
    usable = [i for i in range(len(where)) if counts[i] > 0]
    if len(usable) < swaps:
        raise ValueError("no allowed token to swap in" if not usable else f"fewer than {swaps} positions can change")
    proposed: dict[tuple[int, ...], None] = {}
    for _ in range(children * 4):
        if len(proposed) == children:
            break
        child = list(row)
        for i in torch.randperm(len(usable), generator=rng)[:swaps].tolist():
            p = usable[i]
            j = int(torch.randint(int(counts[p]), (1,), generator=rng))
            child[int(where[p])] = int(tokens[p, j])
        if tuple(child) in proposed or (tried is not None and tried(child)):
            continue
        proposed[tuple(child)] = None
    return _retokenizing_rows(subject, [list(child) for child in proposed], allow_added_tokens)


def propose_edits(
    subject: SubjectModel,
    ranked: RankedSwaps,
    rng: torch.Generator,
    count: int,
    top_k: int,
    positions: range,
    max_tokens: int,
    allow_added_tokens: bool = False,
) -> list[list[int]]:
    """Up to `count` distinct children of a row of text tokens (`ranked.row`) that change its length:
    each inserts a token before one of `positions` or deletes the token at one of them, with even
    chances.

    An inserted token is drawn uniformly from the `top_k` allowed tokens `ranked` scores highest
    at that position: what would best replace the token there is the gradient's guess at what best
    precedes it. Insertions stop at `max_tokens`; a row of one token is never emptied. With
    `--position max` the positions are those up to the peak, so a prompt gains or loses context
    where it can change the activation: a swap alone can never lengthen a prompt whose best real
    example peaks on its third token. Children that do not retokenize exactly are dropped.
    """
    row = list(ranked.row)
    where = list(positions)
    if not where or not set(where) <= set(range(len(row))):
        raise ValueError(f"positions {positions} must be a non-empty part of the row's {len(row)} tokens")
    can_insert, can_delete = len(row) < max_tokens, len(row) > 1
    if not (can_insert or can_delete):
        return []
    k = min(top_k, ranked.tokens.shape[1])
    proposed: dict[tuple[int, ...], None] = {}
    for _ in range(count):
        at = where[int(torch.randint(len(where), (1,), generator=rng))]
        coin = bool(torch.randint(2, (1,), generator=rng))
        if can_insert and (coin or not can_delete):
            token = int(ranked.tokens[at, int(torch.randint(k, (1,), generator=rng))])
            child = row[:at] + [token] + row[at:]
        else:
            child = row[:at] + row[at + 1 :]
        proposed[tuple(child)] = None
    return _retokenizing_rows(subject, [list(child) for child in proposed], allow_added_tokens)


def stacked_swaps(
    subject: SubjectModel,
    parent: list[int],
    lead: list[int],
    improved: list[list[int]],
    count: int,
    allowed: torch.Tensor,
    allow_added_tokens: bool = False,
) -> list[list[int]]:
    """Up to `count` children of `lead` that stack the swaps of children of `parent` which beat it
    (`improved`, best first): lead + the first usable swap, lead + the first two, and so on.

    A usable swap is one child's only change from the parent (same length, one position), at a
    position where `lead` still holds the parent's token and no earlier swap went: each measured
    swap raised the activation alone, so their sum is the natural next step (I-GCG's
    multi-coordinate update). Only allowed tokens; children that do not retokenize exactly are
    dropped.
    """
    if count < 1 or len(lead) != len(parent):
        return []
    swaps: dict[int, int] = {}
    for child in improved:
        if len(child) != len(parent):
            continue
        changed = [p for p, (a, b) in enumerate(zip(child, parent)) if a != b]
        if len(changed) == 1 and (p := changed[0]) not in swaps and lead[p] == parent[p] and bool(allowed[child[p]]):
            swaps[p] = child[p]
    rows: list[list[int]] = []
    row = list(lead)
    for p, token in swaps.items():
        row = row[:p] + [token] + row[p + 1 :]
        rows.append(row)
        if len(rows) == count:
            break
    return _retokenizing_rows(subject, rows, allow_added_tokens)

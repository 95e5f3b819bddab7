"""A prompt is text: which token ids a prompt's text may become, and how text is read into them.

The name of a special or added token written in a prompt (`<bos>`, `<|endoftext|>`, Gemma's
`<start_of_image>`, `<unusedN>`, `[multimodal]`, `<b>`) is read as the characters it is made of, never
as the control token (`encode_text`); `not_text_ids` are the ids no prompt's text becomes and no search
proposes; `TextVocabulary` is the vocabulary as text with those hidden. Added tokens that are only
whitespace (Gemma's runs of newlines and tabs) are how the tokenizer reads ordinary whitespace, and
stay. services/model/subject_model.py tokenizes every prompt through `encode_text`.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence


class TokenVocabulary(Sequence[str]):
    """The model's tokens as text, decoded on first access and kept (a 262k-token vocabulary is
    never listed: a run decodes only the tokens it meets, once each)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._size = len(tokenizer)
        self._texts: dict[int, str] = {}

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):  # type: ignore[override]
        text = self._texts.get(index)
        if text is None:
            text = self._texts[index] = self._tokenizer.decode([index])
        return text


class TextVocabulary(Sequence[str]):
    """The tokens a prompt may be made of, as text: a view of a `TokenVocabulary` in which the
    tokens that are not text (`hidden`, see `not_text_ids`) read "". What random prompts and
    mutations draw from (services/search/random_prompts.py), so they never spell a control token's
    name; `allows_added_tokens` tells them whether markup-like names left here may be drawn."""

    def __init__(self, texts: TokenVocabulary, hidden: frozenset[int], allows_added_tokens: bool = False) -> None:
        self._texts = texts
        self._hidden = hidden
        self.allows_added_tokens = allows_added_tokens

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, index):  # type: ignore[override]
        return "" if index in self._hidden else self._texts[index]


def _is_whitespace(content: str) -> bool:
    return content != "" and not content.strip()


def not_text_ids(tokenizer, allow_added_tokens: bool = False) -> frozenset[int]:
    """The token ids a prompt's text never becomes, and no search proposes: the tokenizer's special
    tokens (BOS, EOS, padding, ...) and, unless `allow_added_tokens`, every added token (special or
    not: Gemma's `<unusedN>`, `<start_of_turn>`, `<start_of_image>`, `[multimodal]`, `<b>`) except
    those that are only whitespace."""
    ids = set(tokenizer.all_special_ids)
    if not allow_added_tokens:
        ids.update(i for i, added in tokenizer.added_tokens_decoder.items() if not _is_whitespace(added.content))
    return frozenset(ids)


# Per tokenizer and setting: the Rust tokenizer that reads a prompt as text, or None where the
# tokenizer's own call already does (see `text_encoder`).
_encoders: weakref.WeakKeyDictionary[object, dict[bool, object]] = weakref.WeakKeyDictionary()
_encoders_lock = threading.Lock()


def text_encoder(tokenizer, allow_added_tokens: bool = False):
    """A private copy of the tokenizer's Rust core that reads every added token's name in a text as
    the characters it spells (whitespace-only added tokens excepted), or with `allow_added_tokens`
    as the token, except the tokenizer's special tokens, which stay characters. None when the
    tokenizer's own call with `split_special_tokens=True` already does that (every such added token
    is marked special, as GPT-2's `<|endoftext|>` is) or has no Rust core (a slow tokenizer: its
    non-special added tokens are then read as tokens).

    Built once per tokenizer and setting, as a tokenizer that shares the original's model (its
    vocabulary and merges: 0.3 GiB for Gemma's 262k tokens, which a full copy would hold twice) and
    its normalizer, pre-tokenizer, post-processor and decoder, with the same added tokens except that
    those to be read as text are marked special, and `encode_special_tokens` on, which is what
    `split_special_tokens` does for special ones. Where the added tokens do not come back with their
    own ids (a vocabulary whose added tokens are not in its model), a full copy is made instead. The
    encoder is never changed afterwards, so encoding with it needs no lock."""
    with _encoders_lock:
        known = _encoders.setdefault(tokenizer, {})
        if allow_added_tokens in known:
            return known[allow_added_tokens]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    encoder = None
    if backend is not None:
        added = backend.get_added_tokens_decoder()
        if not allow_added_tokens:
            # Added tokens whose names the tokenizer would still read as tokens with split_special_tokens.
            as_text = {a.content for a in added.values() if not a.special and not _is_whitespace(a.content)}
            special = {a.content for a in added.values() if a.special} | as_text
        else:
            kept_special = {tokenizer.convert_ids_to_tokens(i) for i in tokenizer.all_special_ids}
            # Needed only where some added token marked special (Gemma's `<unusedN>`) is to be read
            # as the token: otherwise the tokenizer's own call already reads them all as wanted.
            as_text = {a.content for a in added.values() if a.special != (a.content in kept_special)}
            special = kept_special
        if as_text:
            encoder = _sharing_copy(backend, special)
            encoder.encode_special_tokens = True
    with _encoders_lock:
        return _encoders[tokenizer].setdefault(allow_added_tokens, encoder)


def _sharing_copy(backend, special: set[str]):
    """A Rust tokenizer like `backend`, sharing its model and pipeline, whose added tokens are
    `backend`'s with the same ids and options, special exactly when their content is in `special`."""
    from tokenizers import AddedToken, Tokenizer

    added = backend.get_added_tokens_decoder()

    def flagged(token) -> AddedToken:
        return AddedToken(
            token.content, single_word=token.single_word, lstrip=token.lstrip, rstrip=token.rstrip,
            normalized=token.normalized, special=token.content in special,
        )  # fmt: skip

    copy = Tokenizer(backend.model)
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        if getattr(backend, part) is not None:
            setattr(copy, part, getattr(backend, part))
    copy.add_tokens([flagged(added[i]) for i in sorted(added)])
    same = {i: t.content for i, t in copy.get_added_tokens_decoder().items()} == {i: t.content for i, t in added.items()}
    if same and backend.truncation is None and backend.padding is None:
        return copy
    spec = json.loads(backend.to_str())
    for entry in spec.get("added_tokens", []):
        entry["special"] = entry["content"] in special
    return Tokenizer.from_str(json.dumps(spec))


def encode_text(
    tokenizer, texts: Sequence[str], allow_added_tokens: bool = False, offsets: bool = False
) -> list[list[int]] | list[tuple[list[int], list[tuple[int, int]]]]:
    """Each text's token ids as a prompt is measured (no BOS or other token added, control tokens'
    names read as characters: see `text_encoder`), and with `offsets` each token's (start, end) in
    its text beside them. The caller holds whatever lock the tokenizer needs."""
    encoder = text_encoder(tokenizer, allow_added_tokens)
    texts = list(texts)
    if encoder is not None:
        done = encoder.encode_batch(texts, add_special_tokens=False)
        return [(e.ids, list(e.offsets)) for e in done] if offsets else [e.ids for e in done]
    # Without a private copy: the tokenizer's own call, special tokens' names split into text and
    # other added tokens' names read as the tokens.
    encoded = tokenizer(texts, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=offsets)
    if offsets:
        return [(ids, [tuple(o) for o in spans]) for ids, spans in zip(encoded["input_ids"], encoded["offset_mapping"])]
    return list(encoded["input_ids"])

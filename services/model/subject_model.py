"""The subject model: the transformer whose neuron is searched, booted through TransformerBridge.

A batch of prompts is measured in one right-padded forward pass that stops after the neuron's
layer. Each prompt is tokenized here, with one BOS token in front, so that what is measured,
what is masked (BOS and padding) and what is shown to the user are the same tokens. A prompt is
text: the name of a special or added token written in it (`<bos>`, `<|endoftext|>`, Gemma's
`<start_of_image>`, `<unusedN>`, `[multimodal]`, `<b>`) is tokenized as the characters it is made
of, never as the control token, so the BOS the tool adds stays the only one (`encode_text`). Added
tokens that are only whitespace (Gemma's runs of newlines and tabs) are how the tokenizer reads
ordinary whitespace, and stay as they are. With `allow_added_tokens` the added tokens' names are
read as the tokens, except the tokenizer's own special tokens (BOS, EOS, padding, unknown, mask).

One model serves every search of the process (threads, Studio's server, a Ray actor). A forward
pass reads the neuron through a hook attached to the shared model, and every forward pass running
at that moment would fire it: so forward passes, and the tokenizer (whose Rust core refuses to be
used by two threads at once), run one at a time per model, under `SubjectModel.exclusive`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from neuron_search.services.errors import UserError
from neuron_search.services.model.text_tokens import TextVocabulary, TokenVocabulary, encode_text, not_text_ids
from neuron_search.state import Measurement

log = logging.getLogger("neuron_search")

EMBEDDED = "embedded"
# When only a reduction of the logits is kept (`logits_blocks`), they are computed for up to
# LOGITS_BLOCK positions at a time, a tile of LOGITS_TILE_BYTES of the vocabulary at a time. The tile
# bounds the memory: whole blocks of Gemma's 262k-token logits, 128 positions of them, took a 128 MiB
# buffer, a search's largest. The positions set how often the unembedding's weights are read: with
# tiles, 512 of them were 10-15% faster than 128 (bench/RESULTS.md section 24).
LOGITS_BLOCK = 512
LOGITS_TILE_BYTES = 8 << 20


def resolve_device(device: str) -> str:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU here. Use --device cpu (or auto).")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for, but PyTorch sees no Apple GPU here. Use --device cpu (or auto).")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise UserError(f"Unknown --device {device!r}. Use auto, cpu, cuda (or cuda:N) or mps.")
    return device


class _NeuronRead(Exception):
    """Raised by the hook once the neuron's activations are read, to end the forward pass there."""


class SubjectModel:
    def __init__(self, bridge, name: str, device: str) -> None:
        self.bridge = bridge
        self.name = name
        self.device = device
        self.tokenizer = bridge.tokenizer
        self.n_layers: int = bridge.cfg.n_layers
        self.d_mlp: int = bridge.cfg.d_mlp
        self.n_ctx: int = bridge.cfg.n_ctx
        # Every token's text (what a measured prompt's tokens are shown as), and the text-only views
        # random prompts and mutations draw from (`vocabulary_for`).
        self.token_texts = TokenVocabulary(self.tokenizer)
        self._vocabularies: dict[bool, TextVocabulary] = {}
        self.vocabulary = self.vocabulary_for(False)
        self._bos = self.tokenizer.bos_token_id
        self._pad = self.tokenizer.pad_token_id
        if self._pad is None:
            self._pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        # Held for every forward pass and tokenizer call: see the module's docstring. Reentrant, so
        # that a caller may hold it across several passes (e.g. a gradient step and its children).
        self.exclusive = threading.RLock()
        self._unembedding_checked: bool | None = None
        self._tile_buffer: torch.Tensor | None = None  # reused by `logits_blocks`, see `LogitsBlock.tiles`
        self._check_hooks()

    @classmethod
    def load(cls, name: str, device: str = "auto") -> SubjectModel:
        """Boot `name`: a hub name, a local folder, or 'embedded' for the bundled model."""
        import transformers
        from transformer_lens import TransformerBridge

        return_large_frees_to_the_os()
        transformers.logging.disable_progress_bar()
        device = resolve_device(device)
        source = name
        if name == EMBEDDED:
            from neuron_search.services.model.bundled import embedded_subject_folder

            source = str(embedded_subject_folder())
        try:
            bridge = TransformerBridge.boot_transformers(source, device=device, dtype=torch.float32)
        except Exception as error:
            raise UserError(
                f"Could not load the subject model {name!r} ({type(error).__name__}: {str(error)[:300]}). "
                "Give a Hugging Face model name that TransformerBridge supports (e.g. gpt2), a local folder "
                "holding config.json, the weights and the tokenizer, or --model embedded to run offline "
                "on the bundled Gemma 3 270M."
            ) from None
        bridge.eval()
        return cls(bridge, name, device)

    def validate(self, layer: int, neuron: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise UserError(
                f"Layer {layer} does not exist: {self.name} has {self.n_layers} layers, "
                f"numbered 0 to {self.n_layers - 1}. Pick --layer in that range."
            )
        if not 0 <= neuron < self.d_mlp:
            raise UserError(
                f"Neuron {neuron} does not exist: each MLP of {self.name} has {self.d_mlp} neurons "
                f"(d_mlp), numbered 0 to {self.d_mlp - 1}. Pick --neuron in that range."
            )

    def _check_hooks(self) -> None:
        """Every layer's `mlp.hook_post` exists, fires and holds d_mlp neurons, or the model is refused
        now, in one message: otherwise a missing hook shows up as every prompt of every batch
        failing to measure (or, with hooks that are skipped, as a forward pass that never stops)."""
        shapes: dict[int, tuple[int, ...]] = {}
        known = self.bridge.hook_dict
        hooks = [
            (f"blocks.{layer}.mlp.hook_post", lambda act, hook, layer=layer: shapes.__setitem__(layer, tuple(act.shape)))
            for layer in range(self.n_layers)
            if f"blocks.{layer}.mlp.hook_post" in known
        ]
        tokens = torch.tensor([self._with_bos(self.token_ids("Hi"))], device=self.device)
        with self.exclusive, torch.inference_mode():
            self.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
        missing = [layer for layer in range(self.n_layers) if layer not in shapes]
        if missing:
            raise UserError(
                f"The subject model {self.name} has no hook blocks.L.mlp.hook_post for layer(s) "
                f"{', '.join(map(str, missing))} in TransformerLens, so its MLP neurons cannot be read. "
                "Use a model whose TransformerBridge adapter names its MLP activations hook_post (GPT-2, "
                "Gemma, Llama and most decoder-only models do), or --model embedded."
            )
        wrong = {layer: shape for layer, shape in shapes.items() if shape[-1] != self.d_mlp}
        if wrong:
            layer, shape = next(iter(wrong.items()))
            raise UserError(
                f"The subject model {self.name} says each MLP has {self.d_mlp} neurons (d_mlp), but "
                f"blocks.{layer}.mlp.hook_post holds {shape[-1]}. Its configuration and its weights "
                "disagree: check the model folder's config.json."
            )

    def vocabulary_for(self, allow_added_tokens: bool = False) -> TextVocabulary:
        """The tokens a prompt may be made of, as text; a token that is not text (`not_text_ids`)
        reads "". `vocabulary` is the default one."""
        found = self._vocabularies.get(allow_added_tokens)
        if found is None:
            hidden = not_text_ids(self.tokenizer, allow_added_tokens)
            found = self._vocabularies.setdefault(allow_added_tokens, TextVocabulary(self.token_texts, hidden, allow_added_tokens))
        return found

    def token_ids(self, prompt: str, allow_added_tokens: bool = False) -> list[int]:
        """The prompt's tokens; control tokens' names in the text stay text (see the module docstring).
        Every prompt that is measured becomes tokens here (`_prompt_ids`)."""
        with self.exclusive:
            return encode_text(self.tokenizer, [prompt], allow_added_tokens)[0]

    def _prompt_ids(self, prompt: str, allow_added_tokens: bool) -> list[int]:
        # `token_ids(prompt)` as it has always been called where nothing is allowed (tests stand in
        # for it with a function of the prompt alone).
        return self.token_ids(prompt, True) if allow_added_tokens else self.token_ids(prompt)

    def encode(self, prompts: Sequence[str], allow_added_tokens: bool = False) -> list[list[int]]:
        """`token_ids` of many texts in one call (a whole vocabulary's, the gradient's children)."""
        with self.exclusive:
            return encode_text(self.tokenizer, prompts, allow_added_tokens)

    def decode(self, ids: list[int]) -> str:
        with self.exclusive:
            return self.tokenizer.decode(ids)

    def _with_bos(self, ids: list[int]) -> list[int]:
        return ([self._bos] if self._bos is not None else []) + ids

    def truncate(self, prompt: str, max_tokens: int, allow_added_tokens: bool = False) -> str:
        """The prompt cut to at most max_tokens tokens (and to what the model's context holds);
        "" when nothing is left after tokenizing."""
        limit = min(max_tokens, self.n_ctx - 1)
        try:
            ids = self._prompt_ids(prompt, allow_added_tokens)
        except Exception:  # measure() records why this prompt cannot be measured
            return prompt
        if not ids:
            return ""
        if len(ids) <= limit:
            return prompt
        return self.decode(ids[:limit])

    def measure(
        self,
        prompts: Sequence[str],
        layer: int,
        neuron: int,
        position: str = "max",
        batch_size: int = 32,
        fluency: bool = False,
        allow_added_tokens: bool = False,
    ) -> list[Measurement]:
        """The neuron's activation for each prompt, with its per-token values; with `fluency`, each
        prompt's cross-entropy too, from the same forward pass run on to the logits. With
        `allow_added_tokens` an added token's name in a prompt is read as the token."""
        return self.measure_shared(prompts, layer, neuron, (), position, batch_size, fluency, allow_added_tokens)[0]

    def measure_shared(
        self,
        prompts: Sequence[str],
        layer: int,
        neuron: int,
        also: Sequence[int],
        position: str = "max",
        batch_size: int = 32,
        fluency: bool = False,
        allow_added_tokens: bool = False,
    ) -> tuple[list[Measurement], np.ndarray]:
        """`measure`, and from the same forward passes the neurons `also` of the same layer, each
        reduced over the prompt's tokens the same way (`position`): an array [len(prompts), len(also)],
        NaN for a prompt that could not be measured. A sweep shares every pass this way."""
        results: list[Measurement] = []
        shared = np.full((len(prompts), len(also)), np.nan, dtype=np.float32)
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            try:
                measured, values = self._measure_batch(chunk, layer, neuron, position, fluency, also, allow_added_tokens)
            except Exception:
                # One bad prompt must not cost the batch: measure the chunk one by one.
                measured, rows = [], []
                for prompt in chunk:
                    one, row = self._measure_one(prompt, layer, neuron, position, fluency, also, allow_added_tokens)
                    measured.append(one)
                    rows.append(row)
                values = np.stack(rows) if rows else shared[:0]
            results.extend(measured)
            shared[start : start + len(chunk)] = values
        return results, shared

    def _measure_one(
        self, prompt: str, layer: int, neuron: int, position: str, fluency: bool, also: Sequence[int], allow_added_tokens: bool = False
    ) -> tuple[Measurement, np.ndarray]:
        try:
            measured, values = self._measure_batch([prompt], layer, neuron, position, fluency, also, allow_added_tokens)
            return measured[0], values[0]
        except Exception as error:
            log.warning("Could not measure %r: %s", prompt[:60], error)
            failed = Measurement(
                prompt=prompt, activation=0.0, tokens=[], values=[], peak=0, error=f"{type(error).__name__}: {error}", xent=None
            )
            return failed, np.full(len(also), np.nan, dtype=np.float32)

    def layer_maxima(self, prompts: Sequence[str], layer: int, batch_size: int = 32) -> np.ndarray:
        """For each prompt, every neuron of the layer's MLP at its highest over the prompt's tokens:
        an array [len(prompts), d_mlp]. A prompt that tokenizes to nothing gets a row of NaN."""
        out = np.full((len(prompts), self.d_mlp), np.nan, dtype=np.float32)
        for start in range(0, len(prompts), batch_size):
            chunk = [(i, self.token_ids(p)) for i, p in enumerate(prompts[start : start + batch_size], start)]
            chunk = [(i, row) for i, row in chunk if row]
            if not chunk:
                continue
            values, offset, _ = self._forward([row for _, row in chunk], layer, lambda act: act)
            for (i, row), per_token in zip(chunk, values):
                out[i] = per_token[offset : offset + len(row)].amax(dim=0).numpy()
        return out

    def padded(self, ids: list[list[int]]) -> tuple[torch.Tensor, int]:
        """Token rows with BOS in front, right-padded to one length, on the model's device, and the
        position of each row's first text token. Right padding keeps real tokens' positions and,
        with causal attention, their values."""
        if not ids or any(not row for row in ids):
            raise ValueError("every row needs at least one token")
        rows = [self._with_bos(row) for row in ids]
        tokens = torch.full((len(rows), max(map(len, rows))), self._pad, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
        return tokens.to(self.device), len(rows[0]) - len(ids[0])

    def _forward(
        self, ids: list[list[int]], layer: int, read: Callable[[torch.Tensor], torch.Tensor], fluency: bool = False
    ) -> tuple[torch.Tensor, int, list[float] | None]:
        """One right-padded forward pass of the token rows (BOS added) that reads layer's hook_post.

        Returns `read(hook_post)` on the CPU, [rows, positions, ...], the position of each row's
        first text token, and with `fluency` each row's cross-entropy (see `cross_entropy`), from
        the same pass run on to the logits; without it the pass ends at the hook.
        """
        tokens, offset = self.padded(ids)
        captured: list[torch.Tensor] = []

        def keep(activation: torch.Tensor, hook) -> None:  # noqa: ARG001 (TransformerLens API)
            captured.append(read(activation).detach().float().cpu())
            if not fluency:
                raise _NeuronRead  # nothing after this point matters

        # The forward pass ends in the hook: `stop_at_layer` would also stop early, but not at the
        # last layer, where it still runs the unembedding (for Gemma, more work than all 18 blocks).
        hooks = [(f"blocks.{layer}.mlp.hook_post", keep)]
        with self.exclusive, torch.inference_mode():
            if not fluency:
                try:
                    self.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
                except _NeuronRead:
                    pass
                return captured[0], offset, None
            losses = self._cross_entropies(tokens, offset, [len(row) for row in ids], hooks)  # fills `captured` too
            return captured[0], offset, losses

    def logits_blocks(
        self,
        tokens: torch.Tensor,
        where: torch.Tensor,
        hooks: Sequence = (),
        block: int = LOGITS_BLOCK,
        tile_bytes: int = LOGITS_TILE_BYTES,
    ) -> Iterator[LogitsBlock]:
        """The logits at the positions `where` ([rows, positions] bool) of one forward pass of `tokens`
        (running `hooks` too), in the order of `where.nonzero()`, `block` positions at a time, so that
        a caller that reduces them never holds all of them (a 2,048-position batch of Gemma's
        262k-token logits is 2 GiB). Each `LogitsBlock` gives its logits a tile of the vocabulary at a
        time, a tile at most `tile_bytes`, and is valid until the next block is asked for.

        The unembedding runs on those positions only, never on padding or on positions whose
        prediction nobody reads: for Gemma's 262k-token vocabulary it costs as much as all 18 blocks.
        That takes the unembedding's input from its hook; a model whose logits are more than the
        unembedding of that input (Gemma 2's final soft-capping, for one) is found by a probe on
        first use and gets the full logits, selected, instead. Call under `exclusive` and
        inference mode.
        """
        if not self._unembedding_gives_logits():
            for part in self.bridge.run_with_hooks(tokens, fwd_hooks=list(hooks))[where].split(block):
                yield LogitsBlock(part)
            return
        final: list[torch.Tensor] = []

        def keep_final(residual: torch.Tensor, hook) -> None:  # noqa: ARG001 (TransformerLens API)
            final.append(residual)
            raise _NeuronRead  # the rest of the pass is the unembedding, done below where needed

        try:
            self.bridge.run_with_hooks(tokens, fwd_hooks=[*hooks, ("unembed.hook_in", keep_final)])
        except _NeuronRead:
            pass
        head = self.bridge.unembed.original_component
        linear = isinstance(head, torch.nn.Linear) and head.weight.dtype == final[0].dtype
        for part in final[0][where].split(block):
            if linear:
                yield LogitsBlock(part, head, self._tile, tile_bytes)
            else:
                yield LogitsBlock(head(part))

    def _tile(self, rows: int, width: int) -> torch.Tensor:
        """An uninitialised [rows, width] tensor in a buffer the model keeps for the next tile (a tile
        of Gemma's logits is 8 MiB, and allocating it afresh each time cost page faults each time:
        bench/RESULTS.md section 15d). Call under `exclusive`: the next call writes over it."""
        weight = self.bridge.unembed.original_component.weight
        buffer = self._tile_buffer
        if buffer is None or buffer.numel() < rows * width or buffer.dtype != weight.dtype or buffer.device != weight.device:
            size = max(rows * width, LOGITS_TILE_BYTES // weight.element_size())
            buffer = self._tile_buffer = torch.empty(size, dtype=weight.dtype, device=weight.device)
        return buffer[: rows * width].view(rows, width)

    def _unembedding_gives_logits(self) -> bool:
        """Whether the model's logits are exactly its unembedding applied to the unembedding's
        input (checked once, on a probe text, against a full forward pass's logits)."""
        if self._unembedding_checked is None and "unembed.hook_in" not in self.bridge.hook_dict:
            self._unembedding_checked = False
        if self._unembedding_checked is None:
            tokens = torch.tensor([self._with_bos(self.token_ids("The quick brown fox, 42."))], device=self.device)
            final: list[torch.Tensor] = []
            with self.exclusive, torch.inference_mode():
                logits = self.bridge.run_with_hooks(
                    tokens, fwd_hooks=[("unembed.hook_in", lambda residual, hook: final.append(residual))]
                )
                ours = self.bridge.unembed.original_component(final[0]) if final else None
            self._unembedding_checked = ours is not None and ours.shape == logits.shape and torch.allclose(ours, logits, atol=1e-4, rtol=1e-4)
            if not self._unembedding_checked:
                log.info("%s: logits are not the unembedding of its input; cross-entropies use full logits", self.name)
        return self._unembedding_checked

    def cross_entropy(self, ids: list[list[int]], batch_size: int = 16) -> list[float]:
        """Each row's mean next-token loss of its own text tokens under the full model: its fluency
        (lower reads more naturally). The first text token is predicted from BOS; a model without a
        BOS token cannot predict the first one, which is then left out.

        One right-padded forward pass per `batch_size` rows, with logits at the predicting positions
        only (`logits_blocks`).
        """
        losses: list[float] = []
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            tokens, offset = self.padded(chunk)
            with self.exclusive, torch.inference_mode():
                losses.extend(self._cross_entropies(tokens, offset, [len(row) for row in chunk]))
        return losses

    def _cross_entropies(self, tokens: torch.Tensor, offset: int, lengths: list[int], hooks: Sequence = ()) -> list[float]:
        """Each row's mean next-token loss (`cross_entropy`) from one pass of the padded `tokens`
        (rows of `lengths` text tokens after `offset`), running `hooks` too: the logits of each
        distinct prefix among the predicting positions are computed once (`distinct_prefixes`).
        Call under `exclusive` and inference mode."""
        where = predicting(tokens, offset, lengths)
        first, shared = distinct_prefixes(tokens, where)
        return _mean_losses(self.logits_blocks(tokens, first, hooks), shared, tokens, where)

    def _measure_batch(
        self,
        prompts: list[str],
        layer: int,
        neuron: int,
        position: str,
        fluency: bool,
        also: Sequence[int] = (),
        allow_added_tokens: bool = False,
    ) -> tuple[list[Measurement], np.ndarray]:
        ids = [self._prompt_ids(p, allow_added_tokens) for p in prompts]
        for prompt, row in zip(prompts, ids):
            if not row:
                raise ValueError(f"{prompt!r} tokenizes to nothing")
        columns = [neuron, *also]
        values, offset, xents = self._forward(ids, layer, lambda act: act[..., columns], fluency)
        out: list[Measurement] = []
        shared = np.empty((len(prompts), len(also)), dtype=np.float32)
        for i, (prompt, row) in enumerate(zip(prompts, ids)):
            text = values[i, offset : offset + len(row)]
            per_token = text[:, 0].tolist()
            # The peak is the token whose value is the measurement: the highest one, or the last.
            if position == "max":
                peak = max(range(len(per_token)), key=per_token.__getitem__)
                shared[i] = text[:, 1:].amax(dim=0).numpy()
            else:
                peak = len(per_token) - 1
                shared[i] = text[-1, 1:].numpy()
            out.append(
                Measurement(
                    prompt=prompt,
                    activation=float(per_token[peak]),
                    tokens=[self.token_texts[t] for t in row],
                    values=[round(v, 6) for v in per_token],
                    peak=peak,
                    error="",
                    xent=None if xents is None else xents[i],
                )
            )
        return out, shared

def predicting(tokens: torch.Tensor, offset: int, lengths: list[int]) -> torch.Tensor:
    """[rows, positions] bool: the positions whose next token is a row's own text token (a padded
    pass's rows hold `lengths` text tokens after `offset`; position t predicts token t + 1)."""
    where = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    for i, length in enumerate(lengths):
        where[i, : offset + length - 1] = True
    return where


def distinct_prefixes(tokens: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the positions `where` ([rows, positions] bool), the first position of each distinct
    prefix (a mask like `where`) and, for every position of `where` in `where.nonzero()` order, the
    index of its prefix among those firsts.

    A causal model's logits at a position depend on the tokens up to it alone, so positions whose
    rows agree up to there have the same logits: a gradient batch's children share their parent's
    tokens before the swap, and its siblings' too. Their unembedding is computed once.
    """
    first = torch.zeros_like(where)
    rows = tokens.tolist()
    seen: dict[tuple[int, ...], int] = {}
    shared = []
    # Row by row, then position by position, as `nonzero` lists them: the firsts are numbered in
    # the order in which `first.nonzero()` will list them.
    for i, t in where.nonzero().tolist():
        key = tuple(rows[i][: t + 1])
        if key not in seen:
            seen[key] = len(seen)
            first[i, t] = True
        shared.append(seen[key])
    return first, torch.tensor(shared, dtype=torch.long)


def _mean_losses(blocks: Iterable[LogitsBlock], shared: torch.Tensor, tokens: torch.Tensor, where: torch.Tensor) -> list[float]:
    """Each row's mean next-token cross-entropy over its text tokens, from the logits of the
    distinct prefixes (`distinct_prefixes`) among the positions `where` (`predicting`) of a padded
    pass, given in consecutive blocks (`logits_blocks`): `shared` says which logits row each
    position of `where` has. A row with no predicted token (one token and no BOS) gets NaN."""
    targets = torch.roll(tokens, -1, dims=1)[where]  # the token each position predicts
    shared = shared.to(tokens.device)
    # log p(target) = logit(target) - logsumexp(logits): never written out as log_softmax is,
    # which makes this ~3x faster than torch.nn.functional.cross_entropy on a 262k vocabulary (and
    # closer to a float64 reference: bench/fluency_cost.py, RESULTS section 10). The target's logit
    # is read first: the logsumexp then reduces each tile in its own memory (`_logsumexp_tiles`).
    norms: list[torch.Tensor] = []
    picked = torch.zeros(len(targets), device=tokens.device)
    start = 0
    for block in blocks:
        end = start + block.size
        mine = (shared >= start) & (shared < end)
        picked[mine] = block.at(shared[mine] - start, targets[mine]).float()
        norms.append(_logsumexp_tiles(tile for _, tile in block.tiles()))
        start = end
    per_token = (torch.cat(norms) if norms else picked[:0])[shared] - picked
    counts = where.sum(dim=1)
    sums = torch.zeros(len(tokens), dtype=per_token.dtype, device=per_token.device)
    sums.index_add_(0, where.nonzero()[:, 0], per_token)
    return (sums / counts).tolist()


# glibc's mallopt parameter M_MMAP_THRESHOLD, and the size from which an allocation gets pages of its own.
_M_MMAP_THRESHOLD = -3
_OWN_PAGES_FROM = 4 << 20


def return_large_frees_to_the_os() -> None:
    """Give every allocation of 4 MiB or more pages of its own, which go back to the system when it
    is freed. glibc's default raises that threshold as large blocks are freed (to 32 MiB), after
    which the gradients and logits of a search (1 MiB a token of Gemma's vocabulary) come from the
    heap and leave it fragmented: a gradient run's memory grew by 0.05 GiB an iteration, and stays
    flat with this (tests/test_memory.py). Nothing happens on a C library without mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _OWN_PAGES_FROM)
    except (OSError, AttributeError):
        pass


def _logsumexp_tiles(tiles: Iterable[torch.Tensor]) -> torch.Tensor:
    """`torch.logsumexp(logits, dim=-1)` of logits [positions, vocabulary] that come as tiles of their
    columns (`LogitsBlock.tiles`), each reduced in its own memory, which it overwrites: a running sum of
    exponentials, rescaled whenever a tile holds a new maximum (the online softmax's normaliser). As
    torch does, a row of -inf gives -inf and a row holding +inf gives +inf, never NaN."""
    top: torch.Tensor | None = None
    total = shift = torch.zeros(0)
    for tile in tiles:
        tile = tile.float()  # the tile itself, for a float32 model
        high = tile.amax(dim=-1)
        new = high if top is None else torch.maximum(top, high)
        new_shift = new.masked_fill(new.isinf(), 0)  # as torch does: no inf - inf
        if top is None:
            total = torch.zeros_like(new)
        else:
            total.mul_((shift - new_shift).exp_())
        total.add_(tile.sub_(new_shift[:, None]).exp_().sum(dim=-1))
        top, shift = new, new_shift
    if top is None:
        raise ValueError("no logits")
    return total.log_().add_(shift)


class LogitsBlock:
    """The logits of `size` consecutive positions (`SubjectModel.logits_blocks`), never all held at
    once by a linear unembedding: `at` reads single entries, `tiles` gives them a slice of the
    vocabulary at a time. Read `at` before `tiles`, whose tiles a caller may overwrite."""

    def __init__(
        self,
        rows: torch.Tensor,
        head: torch.nn.Linear | None = None,
        tile: Callable[[int, int], torch.Tensor] | None = None,
        tile_bytes: int = LOGITS_TILE_BYTES,
    ) -> None:
        # rows: the unembedding's input [size, d_model] with `head` (and `tile`, the buffer its tiles are
        # written into), else the logits [size, vocabulary].
        if (head is None) != (tile is None):
            raise ValueError("a LogitsBlock takes a head and a tile buffer together, or neither")
        self._rows, self._head, self._tile, self._tile_bytes = rows, head, tile, tile_bytes
        self.size = len(rows)

    def at(self, positions: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The logit of token ids[i] at position positions[i] of the block (to rounding what the
        tiles hold there: a dot product, not a column of a matrix product)."""
        if self._head is None:
            return self._rows[positions, ids]
        picked = (self._rows[positions] * self._head.weight[ids]).sum(dim=-1)
        return picked if self._head.bias is None else picked + self._head.bias[ids]

    def tiles(self) -> Iterator[tuple[range, torch.Tensor]]:
        """(token ids, their logits [size, len(ids)]) over the whole vocabulary, in order; a tile is
        valid until the next one is asked for, which may be written over it."""
        if self._head is None or self._tile is None:  # (both None: __init__ takes them together)
            yield range(self._rows.shape[1]), self._rows
            return
        weight, bias = self._head.weight, self._head.bias
        width = max(1, self._tile_bytes // (weight.element_size() * self.size))
        for first in range(0, len(weight), width):
            ids = range(first, min(len(weight), first + width))
            out = self._tile(self.size, len(ids))
            if bias is None:
                torch.mm(self._rows, weight[ids.start : ids.stop].T, out=out)
            else:
                torch.addmm(bias[ids.start : ids.stop], self._rows, weight[ids.start : ids.stop].T, out=out)
            yield ids, out

"""Two peers for the gradient search in bench/gradient_quality.py: nanoGCG and a plain GCG loop.

Not a benchmark itself. Both optimise one prompt for one neuron with the same objective as this
tool: the neuron's activation at its peak text token (`--position max`), BOS in front, nothing after
the prompt, no chat template, Gemma's sqrt(d_model) embedding scale in the gradient (read from the
model), and the tokens the tool's gradient may propose (`services.model.gradient.allowed_tokens`
with `ascii_only=True`: printable ASCII text tokens that round-trip, never special or added ones).

Every candidate's activation is `SubjectModel.measure` of its text, the measurement a search's
records hold, so the numbers compare with the tool's. `Evaluator` counts measured prompts the way a
search does: a prompt is measured (and counted) once; a candidate the method proposes again gets its
earlier value back at no cost to the budget. The start prompt is the first measured prompt. Each
run stops when the budget of measured prompts is spent.

- `plain_gcg`: GCG (Zou et al. 2023, llm-attacks) on a single prompt. Each step: the gradient of
  the activation with respect to the prompt's one-hot tokens (`services.model.gradient.token_gradients`,
  the tool's own); per position the top-k allowed tokens of that gradient (the negative gradient of
  the loss); `width` candidates, each one uniformly drawn position swapped to a uniformly drawn
  token of that position's top-k; the retokenization filter (`encode(decode(ids)) == ids` with the
  tokenizer as a measurement reads the text); every surviving candidate measured; greedy: the best
  candidate replaces the prompt when it is at least as high.
- `nanogcg_run`: nanoGCG 0.3.0's `GCG` class, unchanged but for its two loss functions
  (`compute_token_gradient` and `_compute_candidates_loss_original`): loss = -activation, the
  gradient through the Hugging Face model loaded from the subject's folder, the candidates' loss
  from `SubjectModel.measure`. Its own sampling (uniform position, `n_replace` swaps, top-k of the
  negative one-hot gradient), its own retokenization filter and its attack buffer (size 0: each
  step moves to its best candidate) are nanoGCG's. The tokens it may not use are set as its
  `not_allowed_ids`. nanoGCG pins transformers<=4.47.1; this project has transformers 5, so it is
  installed without its dependencies:

      pip install --no-deps nanogcg==0.3.0

  (nanoGCG imports torch, transformers, scipy and tqdm, all present here.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

import common  # noqa: F401 (sets up the import path and offline settings)

from neuron_search.services.model.gradient import embedding_scale, token_gradients
from neuron_search.services.search.candidates import allowed_tokens
from neuron_search.services.model.subject_model import SubjectModel

NEUTRAL_START = "The quick brown fox jumps over the lazy dog"


@dataclass
class PeerRun:
    """What a peer did: its measured prompts in the order measured (`records`: prompt, activation,
    xent None, step), the search's seconds, and its own counts."""

    method: str
    records: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0  # gradient steps taken
    proposed: int = 0  # candidates scored (measured or repeated), the start included
    filtered: int = 0  # candidates the retokenization filter dropped
    mismatched: int = 0  # nanoGCG only: candidates its filter kept whose text the tool tokenizes otherwise
    stop: str = ""

    @property
    def best(self) -> tuple[str, float]:
        top = max(self.records, key=lambda r: r["activation"])
        return top["prompt"], top["activation"]


class Evaluator:
    """Measures candidate prompts with `SubjectModel.measure` and keeps the count of measured
    prompts; a prompt measured before is not measured or counted again."""

    def __init__(self, subject: SubjectModel, layer: int, neuron: int, budget: int, run: PeerRun) -> None:
        self.subject, self.layer, self.neuron, self.budget, self.run = subject, layer, neuron, budget, run
        self.known: dict[str, float] = {}
        self.step = 0

    @property
    def left(self) -> int:
        return self.budget - len(self.run.records)

    def score(self, texts: list[str]) -> list[float | None]:
        """Each text's activation; None for a new text past the budget (not measured)."""
        self.run.proposed += len(texts)
        new: list[str] = []
        for text in texts:
            if text not in self.known and text not in new and len(new) < self.left:
                new.append(text)
        if new:
            for m in self.subject.measure(new, self.layer, self.neuron, "max"):
                if m["error"]:
                    raise RuntimeError(f"could not measure {m['prompt']!r}: {m['error']}")
                self.known[m["prompt"]] = m["activation"]
                self.run.records.append({"prompt": m["prompt"], "activation": m["activation"], "xent": None, "step": self.step})
        return [self.known.get(text) for text in texts]


def disallowed_ids(subject: SubjectModel) -> torch.Tensor:
    """The token ids neither peer may swap in: all but the tool's gradient's allowed tokens."""
    return (~allowed_tokens(subject, ascii_only=True)).nonzero().flatten()


def plain_gcg(
    subject: SubjectModel,
    layer: int,
    neuron: int,
    start: str,
    budget: int,
    width: int = 64,
    top_k: int = 64,
    seed: int = 0,
    patience: int = 50,
) -> PeerRun:
    """A plain single-prompt GCG loop from `start` until `budget` prompts are measured (or
    `patience` steps in a row measure nothing new)."""
    began = time.perf_counter()
    run = PeerRun("gcg")
    evaluator = Evaluator(subject, layer, neuron, budget, run)
    rng = torch.Generator().manual_seed(seed)
    allowed = allowed_tokens(subject, ascii_only=True)
    ids = subject.token_ids(start)
    (current,) = evaluator.score([subject.decode(ids)])
    grad, grad_of, idle = None, None, 0
    while evaluator.left > 0:
        if idle >= patience:
            run.stop = f"{patience} steps measured nothing new"
            break
        run.steps += 1
        evaluator.step = run.steps
        if grad_of != ids:  # the same prompt has the same gradient
            grad = token_gradients(subject, [ids], layer, neuron, "max")[1][0]
            grad_of = list(ids)
        # Top-k of the negative gradient of the loss (-activation), allowed tokens only.
        top = grad.masked_fill(~allowed, -torch.inf).topk(min(top_k, int(allowed.sum())), dim=-1).indices
        positions = torch.randint(len(ids), (width,), generator=rng).tolist()
        picks = torch.randint(top.shape[1], (width,), generator=rng).tolist()
        candidates = []
        for p, k in zip(positions, picks):
            child = list(ids)
            child[p] = int(top[p, k])
            candidates.append(child)
        texts = [subject.decode(c) for c in candidates]
        again = subject.encode(texts)
        kept = [(c, t) for c, t, a in zip(candidates, texts, again) if a == c]
        run.filtered += len(candidates) - len(kept)
        measured_before = len(run.records)
        values = evaluator.score([t for _, t in kept]) if kept else []
        idle = idle + 1 if len(run.records) == measured_before else 0
        scored = [(v, c) for v, (c, _) in zip(values, kept) if v is not None]
        if scored:
            value, child = max(scored, key=lambda vc: vc[0])
            if value >= current:
                current, ids = value, child
    run.stop = run.stop or "budget"
    run.seconds = time.perf_counter() - began
    return run


def _mlp_post_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The module whose input is the MLP's post-activation (TransformerLens' `mlp.hook_post`)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers"):  # Gemma, Llama, Mistral, Qwen: down_proj(act(gate) * up)
        return inner.layers[layer].mlp.down_proj
    transformer = getattr(model, "transformer", None)
    if transformer is not None and hasattr(transformer, "h"):  # GPT-2: c_proj(gelu(c_fc))
        return transformer.h[layer].mlp.c_proj
    raise ValueError(f"no known MLP layout in {type(model).__name__}")


class _Stop(Exception):
    pass


class _RecordingEmbedding(torch.nn.Module):
    """nanoGCG's embedding layer, which also remembers the last ids it embedded and what it gave
    back, so that the candidate loss (which nanoGCG hands only embeddings) measures those ids' text."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    @property
    def num_embeddings(self) -> int:
        return self.inner.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.inner(ids)
        self.last = (ids, out)
        return out


def hf_model(folder: str) -> torch.nn.Module:
    """The subject's weights through Hugging Face transformers, float32, for nanoGCG."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    return model


def nanogcg_run(
    subject: SubjectModel,
    model: torch.nn.Module,
    folder: str,
    layer: int,
    neuron: int,
    start: str,
    budget: int,
    width: int = 64,
    top_k: int = 64,
    seed: int = 0,
) -> PeerRun:
    """nanoGCG 0.3.0 from `start` until `budget` prompts are measured; `model` is `hf_model(folder)`."""
    import nanogcg.gcg
    from nanogcg.gcg import GCG, GCGConfig
    from transformers import AutoTokenizer

    nanogcg.gcg.tqdm = lambda steps, **kwargs: steps  # no progress bar (display only)
    logging.getLogger("nanogcg").setLevel(logging.ERROR)
    run = PeerRun("nanogcg")
    evaluator = Evaluator(subject, layer, neuron, budget, run)
    hooked = _mlp_post_module(model, layer)
    embedding = model.get_input_embeddings()
    # The embedding scale, read from the model (sqrt(d_model) for Gemma, 1 for GPT-2) as the tool reads it.
    probe = torch.tensor(subject.token_ids(NEUTRAL_START))
    looked_up, embedded = embedding.weight[probe].float(), embedding(probe).float()
    scale = float((embedded * looked_up).sum() / looked_up.square().sum())
    if abs(scale - embedding_scale(subject)) > 1e-4 * max(1.0, scale):
        raise RuntimeError(f"the HF embedding scale {scale} is not the tool's {embedding_scale(subject)}")
    bos = subject.tokenizer.bos_token_id

    def activation(embeds: torch.Tensor) -> torch.Tensor:
        """The neuron at each optimized position of one row of embeddings (BOS first)."""
        read: list[torch.Tensor] = []

        def keep(module, args):  # noqa: ARG001 (torch hook API)
            read.append(args[0][..., neuron])
            raise _Stop

        handle = hooked.register_forward_pre_hook(keep)
        try:
            model(inputs_embeds=embeds, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return read[0][0, 1 if bos is not None else 0 :]

    def bos_embeds() -> torch.Tensor:
        return embedding(torch.tensor([[bos]])) if bos is not None else embedding.weight[:0][None]

    class NeuronGCG(GCG):
        def compute_token_gradient(self, optim_ids: torch.Tensor) -> torch.Tensor:
            # nanoGCG's one-hot gradient, with the loss -(max over the prompt's tokens) and the
            # embedding scale its own version leaves out.
            onehot = torch.nn.functional.one_hot(optim_ids, num_classes=embedding.num_embeddings).to(model.dtype)
            onehot.requires_grad_()
            optim_embeds = (onehot @ embedding.weight) * scale
            with torch.enable_grad():
                loss = -activation(torch.cat([bos_embeds(), optim_embeds], dim=1)).max()
                (grad,) = torch.autograd.grad(outputs=[loss], inputs=[onehot])
            run.steps += 1
            evaluator.step = run.steps
            return grad

        def _compute_candidates_loss_original(self, search_batch_size: int, input_embeds: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
            ids, out = recording.last
            # What nanoGCG hands over is [before (BOS), the ids' embeddings, after (none), target (none)].
            expected = self.before_embeds.shape[1] + ids.shape[1]
            if input_embeds.shape[1] != expected or not torch.equal(input_embeds[:, -ids.shape[1] :], out):
                raise RuntimeError("nanoGCG's candidate embeddings are not the last ids embedded")
            rows = ids.tolist()
            texts = self.tokenizer.batch_decode(rows)
            run.mismatched += sum(again != row for again, row in zip(subject.encode(texts), rows))
            values = evaluator.score(texts)
            if evaluator.left <= 0:
                self.stop_flag = True  # nanoGCG's own early stop: ends the run after this step
            return torch.tensor([-v if v is not None else torch.inf for v in values])

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"  # none
    config = GCGConfig(
        num_steps=budget,  # an upper bound: the budget ends the run (stop_flag)
        optim_str_init=start,
        search_width=width,
        topk=top_k,
        n_replace=1,
        buffer_size=0,
        use_prefix_cache=False,
        allow_non_ascii=True,  # the allowed tokens are set below, as the tool's
        filter_ids=True,
        seed=seed,
        verbosity="ERROR",
    )
    gcg = NeuronGCG(model, tokenizer, config)
    gcg.not_allowed_ids = disallowed_ids(subject)
    recording = _RecordingEmbedding(gcg.embedding_layer)
    gcg.embedding_layer = recording

    began = time.perf_counter()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        gcg.run("", "")
        run.stop = "budget" if evaluator.left <= 0 else "nanoGCG's steps"
    except RuntimeError as error:
        if "after decoding and re-encoding" not in str(error):
            raise
        run.stop = "nanoGCG: no candidate passed its retokenization filter"
    finally:
        torch.use_deterministic_algorithms(deterministic)  # nanoGCG's seed turns it on for the process
    run.seconds = time.perf_counter() - began
    # Every step's candidates reach the loss after its filter; the start reached it first.
    run.filtered = run.steps * width - (run.proposed - 1)
    return run


def check_hf_activation(subject: SubjectModel, model: torch.nn.Module, layer: int, neuron: int, prompt: str) -> tuple[float, float]:
    """The neuron on `prompt` (max over its tokens after BOS) through the HF model as nanoGCG's
    gradient reads it, and through `SubjectModel.measure`: the two must agree."""
    ids = subject.token_ids(prompt)
    bos = subject.tokenizer.bos_token_id
    row = torch.tensor([([bos] if bos is not None else []) + ids])
    read: list[torch.Tensor] = []

    def keep(module, args):  # noqa: ARG001
        read.append(args[0][..., neuron])
        raise _Stop

    handle = _mlp_post_module(model, layer).register_forward_pre_hook(keep)
    try:
        with torch.no_grad():
            model(input_ids=row, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    hf = float(read[0][0, 1 if bos is not None else 0 :].max())
    (measured,) = subject.measure([prompt], layer, neuron, "max")
    return hf, measured["activation"]

"""The run context: every setting a user chooses for one search (LangGraph's context_schema).

It is immutable during a run. Each field's description is the help text of its `run.py` option
and of its entry in LangGraph Studio's form, so there is one place to document a knob.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _knob(default, help: str, **metadata):
    return field(default=default, metadata={"description": help, **metadata})


@dataclass(frozen=True)
class SearchContext:
    # What to search.
    neuron: int = _knob(840, "Index of the MLP neuron to drive (0 <= neuron < d_mlp).")
    layer: int = _knob(9, "Transformer block whose MLP holds the neuron (0 <= layer < n_layers).")
    model: str = _knob(
        "gpt2",
        "Subject model: a Hugging Face name TransformerBridge can boot, a local folder, "
        "or 'embedded' for the bundled Gemma 3 270M that runs offline.",
    )
    device: str = _knob("auto", "Where the subject model runs: auto, cpu, cuda or mps.")
    position: str = _knob(
        "max",
        "How a prompt's per-token activations become one number: 'max' over its tokens, "
        "or the 'last' token's.",
        choices=("max", "last"),
    )

    # Who proposes prompts.
    llm: str = _knob(
        "auto",
        "Prompt proposer: 'auto' (Ollama if it answers, else the embedded LLM), "
        "'ollama:NAME' or 'embedded'.",
    )
    temperature: float = _knob(0.7, "Sampling temperature of the proposing LLM.")
    hint: str = _knob(
        "", "Your notes on what the neuron seems to detect; put into every LLM request."
    )
    batch_size: int = _knob(8, "Prompts the LLM proposes, and the model measures, per iteration.")
    fill: str = _knob(
        "mutations",
        "What tops up an LLM batch that comes back with fewer than --batch-size usable prompts: "
        "'mutations' of the top prompts, or 'none' (measure only what the LLM wrote).",
        choices=("mutations", "none"),
    )
    max_prompt_tokens: int = _knob(64, "Prompts are cut to this many tokens before measuring.")
    top_k: int = _knob(10, "How many top and bottom prompts are kept, shown to the LLM and printed.")
    seed: int = _knob(0, "Random seed of the fallback generator and of the LLM's sampling.")

    # The semantic filter.
    embedder: str = _knob(
        "all-MiniLM-L6-v2",
        "Sentence-transformers model for the semantic filter: a name or a local folder "
        "(the bundled copy of all-MiniLM-L6-v2 is used when installed).",
    )
    similarity_threshold: float = _knob(
        1.0,
        "Cosine similarity at or above which a prompt counts as a near-copy of a stored one: "
        "1.0 rejects exact duplicates only (measured best at the same LLM cost, bench/RESULTS.md "
        "section 6); the original tool used 0.5.",
    )
    filter_buckets: str = _knob(
        "mid",
        "Comma-separated buckets (low, mid, high) whose near-copies are rejected.",
    )
    low_percentile: float = _knob(15.0, "Activations at or below this percentile form the low bucket.")
    high_percentile: float = _knob(85.0, "Activations at or above this percentile form the high bucket.")
    max_attempts: int = _knob(
        5, "Times the LLM is asked again when a whole batch is rejected, before the random fallback."
    )

    # Stagnation and budgets.
    patience: int = _knob(
        100,
        "Measured prompts without improvement before random prompts are injected "
        "(the original tool measured one prompt per iteration).",
    )
    min_improvement: float = _knob(0.001, "A rise of the best activation smaller than this is no improvement.")
    iterations: int = _knob(100, "Stop after this many iterations (one batch each).")
    max_prompts: int = _knob(0, "Stop after this many measured prompts (0: no limit).")
    target: float | None = _knob(None, "Stop as soon as the best activation reaches this value.")
    time_limit: float = _knob(0.0, "Stop after this many seconds of search (0: no limit).")

    # Seeds and where results go.
    seed_prompts: tuple[str, ...] = _knob((), "Extra seed prompts, measured first with the built-in ones.")
    builtin_seeds: bool = _knob(True, "Measure the built-in diverse seed prompts first.")
    results_dir: str = _knob("results", "Folder that holds one sub-folder per run.")
    run_id: str = _knob("", "Name of this run's folder under results_dir (empty: a new id).")


def describe(name: str) -> str:
    """The help sentence of one context field."""
    return next(f.metadata["description"] for f in fields(SearchContext) if f.name == name)

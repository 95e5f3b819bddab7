"""The run context: every setting a user chooses for one search (LangGraph's context_schema).

It is immutable during a run. Each field's description is the help text of its `run.py` option
and of its entry in LangGraph Studio's form, so there is one place to document a knob.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from neuron_search.services.errors import UserError

# The knobs that take one of a few words: typed so that Studio's form offers them as a drop-down.
Position = Literal["max", "last"]
Fill = Literal["mutations", "none"]
Strategy = Literal["llm", "gradient", "mixed"]
CHOICES: dict[str, Any] = {"Position": Position, "Fill": Fill, "Strategy": Strategy}


def _knob(default, help: str, **metadata):
    return field(default=default, metadata={"description": help, **metadata})


# The largest value each size knob takes, from any way in (CLI, API, Studio's form): far above any
# useful setting, low enough that a typo cannot ask for an absurd allocation or overflow.
LIMITS = {
    "neuron": 10**7, "layer": 10**4, "batch_size": 4096, "max_prompt_tokens": 4096, "top_k": 1000,
    "population": 256, "children": 256, "lead_children": 1024, "lead_patience": 10**6, "lead_distance_stall": 10**6, "combine": 64, "readable_every": 1000, "gradient_top_k": 4096, "swaps": 64, "edits": 256, "threads": 1024,
    "iterations": 10**9, "max_prompts": 10**9, "max_llm_calls": 10**7, "patience": 10**9,
    "max_attempts": 1000, "explain_every": 10**7, "seed": 2**32 - 1, "temperature": 100.0, "lead_distance": 100.0,
}  # fmt: skip

# The settings that say where files go and what is loaded from disk or the hub. Their defaults come
# from these environment variables where set; LangGraph Studio's form may not change them (graph/studio.py)
# unless the server's operator sets NEURON_SEARCH_FORM_PATHS=1.
SERVER_SETTINGS = {
    "results_dir": "NEURON_SEARCH_RESULTS_DIR",
    "model": "NEURON_SEARCH_MODEL",
    "embedder": "NEURON_SEARCH_EMBEDDER",
    "sweep_table": "NEURON_SEARCH_SWEEP_TABLE",
    "corpus": "NEURON_SEARCH_CORPUS",
}

# A run or sweep id names one folder inside the results folder: never a path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,+=@-]{0,99}")


def check_name(name: Any, what: str = "run id") -> str:
    """`name` if it is a safe folder name (one component, no '..', not absolute), else a UserError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise UserError(
            f"{what[0].upper() + what[1:]} {name!r} is not a valid name: use 1-100 letters, digits and . _ - , + = @, "
            "starting with a letter or digit (no '/', '\\' or '..'); it names a folder inside the "
            "results folder, never a path."
        )
    return name


@dataclass(frozen=True)
class SearchContext:
    # What to search.
    neuron: int = _knob(840, "Index of the MLP neuron to drive (0 <= neuron < d_mlp).")
    layer: int = _knob(9, "Transformer block whose MLP holds the neuron (0 <= layer < n_layers).")
    model: str = _knob(
        os.environ.get(SERVER_SETTINGS["model"], "gpt2"),
        "Subject model: a Hugging Face name TransformerBridge can boot, a local folder, "
        "or 'embedded' for the bundled Gemma 3 270M that runs offline.",
    )
    device: str = _knob("auto", "Where the subject model runs: auto, cpu, cuda or mps.")
    threads: int = _knob(
        0,
        "CPU threads this process gives torch and the embedded LLM (0: torch's default, all cores). When several "
        "searches share a machine (two runs side by side), give each cores / processes: their threads otherwise "
        "fight over the cores and each runs several times slower. A sweep's local Ray workers get cores // --workers.",
    )
    position: Position = _knob(
        "max",
        "How a prompt's per-token activations become one number: 'max' over its tokens, "
        "or the 'last' token's.",
        choices=get_args(Position),
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
    fill: Fill = _knob(
        "mutations",
        "What tops up an LLM batch that comes back with fewer than --batch-size usable prompts: "
        "'mutations' of the top prompts, or 'none' (measure only what the LLM wrote).",
        choices=get_args(Fill),
    )
    max_prompt_tokens: int = _knob(64, "Prompts are cut to this many tokens before measuring.")
    top_k: int = _knob(10, "How many top and bottom prompts are kept, shown to the LLM and printed.")
    seed: int = _knob(0, "Random seed of the fallback generator and of the LLM's sampling.")

    # The gradient search.
    strategy: Strategy = _knob(
        "gradient",
        "Who proposes prompts: 'gradient' (token swaps chosen by the subject model's gradient, no LLM needed; "
        "the best at 2,000 prompts in bench/RESULTS.md section 15g), 'llm' (the LLM, with mutations) or "
        "'mixed' (the two take turns, one budget).",
        choices=get_args(Strategy),
    )
    population: int = _knob(8, "Prompts the gradient search keeps and improves, one per fluency weight.")
    children: int = _knob(4, "Token-swap children the gradient proposes per readable slot (fluency weight > 0) and iteration.")
    lead_children: int = _knob(
        32,
        "Token-swap children of the lead (the slot of fluency weight 0, which keeps the highest activation) per "
        "iteration, ranked by the activation's gradient alone; measured for the activation only, and for the "
        "cross-entropy too when one beats the lead.",
    )
    lead_patience: int = _knob(
        0,
        "Iterations in a row in which no child beats the lead after which the lead moves to its best child "
        "anyway (GCG's non-elitist step, which can leave a local maximum; the best ever stays in the records); "
        "0: the lead moves only up.",
    )
    lead_uniform_positions: bool = _knob(
        True,
        "The lead's children draw their swap's position uniformly, then a token among that position's "
        "--gradient-top-k best (GCG's draw); off: among the --gradient-top-k best (position, token) pairs over "
        "all positions.",
    )
    lead_distance: float = _knob(
        0.0,
        "The lead (every slot with --no-fluency-gradient) ranks swaps by the activation's gradient less this many "
        "of its standard deviations per standard deviation of the distance between the new token's embedding and "
        "the replaced one's (Faster-GCG's regularizer: the gradient's estimate is best near the current token; "
        "bench/RESULTS.md sections 34-35). 0: the gradient alone.",
    )
    lead_distance_stall: int = _knob(
        0,
        "--lead-distance applies only once the lead has gone this many gradient batches in a row without a child "
        "beating it; while it climbs, the gradient alone ranks its swaps, so far swaps stay open to it "
        "(bench/RESULTS.md section 36; without a lead slot it never applies). 0: in every batch.",
    )
    lead_distance_share: float = _knob(
        1.0,
        "The share of the lead's --lead-children whose swaps --lead-distance ranks; the others are drawn from the "
        "gradient alone, so near and far swaps are both tried in every batch (bench/RESULTS.md section 37). "
        "1: all of them.",
    )
    readable_every: int = _knob(
        2,
        "The readable slots (fluency weight > 0) propose children in every Nth gradient batch only; the lead "
        "proposes in every one, so it takes more, smaller steps for the same share of the budget "
        "(bench/RESULTS.md section 27; 1 with --lead-children 64 was the default before). Without a lead "
        "(--fluency-range's LOW above 0) every batch is theirs.",
    )
    gradient_top_k: int = _knob(64, "A swap picks among this many tokens, those the gradient ranks highest at its position.")
    swaps: int = _knob(1, "Tokens each gradient child changes.")
    combine: int = _knob(
        4,
        "When children of the lead beat it, this many more children next iteration stack their swaps onto the new "
        "lead, best first (the new lead plus the second-best swap, plus the second and third, ...; 0: none).",
    )
    edits: int = _knob(
        2,
        "More children per population member that insert a token (drawn from the gradient's top tokens there) "
        "or delete one, before the peak, so a prompt's length can change (0: fixed lengths, as in EPO).",
    )
    fluency_range: str = _knob(
        "0,10",
        "LOW,HIGH: the population's fluency weights, log-spaced; slot i keeps the prompt with the lowest "
        "-activation + weight_i * cross-entropy. A LOW of 0 makes slot 0 the lead (the highest activation, "
        "grown by --lead-children); 0,0 ignores fluency.",
    )
    fluency_gradient: bool = _knob(
        True,
        "Each slot ranks token swaps by the activation's gradient plus its fluency weight times how much the "
        "swap lowers the prompt's own next-token loss there (EPO's direct term; one more forward pass of "
        "the population an iteration); off ranks by the activation's gradient alone.",
    )
    ascii_only: bool = _knob(True, "The gradient proposes only tokens written in printable ASCII.")
    allow_added_tokens: bool = _knob(
        False,
        "Prompts may hold the tokenizer's added and control tokens (<start_of_image>, <start_of_turn>, <unusedN>, "
        "markup tags): the gradient, mutations and fallback may propose them, and their names in a prompt are read "
        "as those tokens (BOS, EOS and padding never are). Off: a prompt is text, and such a name is measured as "
        "the characters it spells.",
    )

    # What the neuron detects.
    explain: bool = _knob(
        True,
        "End the run with the LLM's one-sentence explanation of what the neuron detects, scored beside a "
        "control on prompts the explainer never saw (a few dozen LLM calls; run.py explain RUN_ID does it later).",
    )
    explain_every: int = _knob(
        0,
        "Every this many iterations, explain the records so far, score that by generation, and put it into "
        "the LLM's requests so the search tests and refines it (0: never).",
    )

    # The semantic filter.
    embedder: str = _knob(
        os.environ.get(SERVER_SETTINGS["embedder"], "all-MiniLM-L6-v2"),
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
    iterations: int = _knob(1000, "Stop after this many iterations (one batch each); a cap, as the default budget is --max-prompts.")
    max_prompts: int = _knob(
        2000,
        "Stop after exactly this many measured prompts, seeds included (0: no limit). The default budget: "
        "every quality figure in the README and bench/RESULTS.md is at 2,000.",
    )
    max_llm_calls: int = _knob(
        0,
        "Stop after this many LLM calls: the proposer's and, with --explain-every, the hypotheses' "
        "(0: no limit; the final explanation's calls are not counted).",
    )
    target: float | None = _knob(None, "Stop as soon as the best activation reaches this value.")
    time_limit: float = _knob(0.0, "Stop after this many seconds of search (0: no limit).")

    # Seeds and where results go.
    seed_prompts: tuple[str, ...] = _knob((), "Extra seed prompts, measured first with the built-in ones.")
    builtin_seeds: bool = _knob(True, "Measure the built-in diverse seed prompts first.")
    seed_corpus: bool | None = _knob(
        None,
        "Also seed the search with the neuron's top --top-k snippets of real text (run.py exemplars' "
        "corpus, saved where the report finds the dataset max; the layer's first scan takes minutes, "
        "later neurons of the layer seconds). Unset: on for --strategy gradient and mixed, whose "
        "gradient climbs best from real text, off for llm.",
    )
    corpus: str = _knob(
        os.environ.get(SERVER_SETTINGS["corpus"], ""),
        "The real text --seed-corpus seeds from and the explanation is scored on, as run.py exemplars --corpus takes it: empty for the Python standard library's docstrings and comments, else a text file, a folder, a "
        ".jsonl, .json or .parquet file, or hf:NAME[:CONFIG[:SPLIT]] for a Hugging Face dataset streamed up to 5,000 snippets.",
    )
    text_column: str = _knob("", "The column of a .jsonl, .json, .parquet or hf: corpus that holds its text (empty: 'text', else the first column of strings).")
    results_dir: str = _knob(os.environ.get(SERVER_SETTINGS["results_dir"], "results"), "Folder that holds one sub-folder per run.")
    sweep_table: str = _knob(
        os.environ.get(SERVER_SETTINGS["sweep_table"], ""),
        "A sweep's shared table (its sweep.sqlite): every prompt measured here also enters the table of each "
        "neuron of the sweep whose top prompts it ranks among (run.py sweep sets it; empty: none).",
    )
    run_id: str = _knob("", "Name of this run's folder under results_dir (empty: a new id).")


def describe(name: str) -> str:
    """The help sentence of one context field."""
    return next(f.metadata["description"] for f in fields(SearchContext) if f.name == name)


def seeds_from_corpus(ctx: SearchContext) -> bool:
    """Whether the run is seeded with the neuron's top real snippets (--seed-corpus, or its default)."""
    return ctx.strategy != "llm" if ctx.seed_corpus is None else ctx.seed_corpus


def fluency_weights(ctx: SearchContext) -> list[float]:
    """The population's fluency weights, one per slot, log-spaced over --fluency-range (EPO's λ);
    a LOW of 0 gives the first slot no fluency term at all."""
    low, high = (float(x) for x in ctx.fluency_range.split(","))
    if not 0.0 <= low <= high:
        raise ValueError(ctx.fluency_range)
    n = ctx.population
    if n == 1 or high == 0.0:
        return [low] * n
    start = low if low > 0 else high / 100  # log-spacing needs a positive start
    weights = [start * (high / start) ** (i / (n - 1)) for i in range(n)]
    if low == 0.0:
        weights[0] = 0.0
    return weights


def as_context(value: Any) -> SearchContext:
    """The run's context from what LangGraph hands over: None (Studio's empty form), a dict or a context,
    each value coerced to its field's type as the CLI parses it ("8" for an integer is 8)."""
    if value is None:
        return SearchContext()
    if isinstance(value, SearchContext):  # LangGraph's server builds it from the form without checking types
        value = {f.name: getattr(value, f.name) for f in fields(SearchContext)}
    if isinstance(value, dict):
        known = {f.name: f for f in fields(SearchContext)}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise UserError(f"Unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        coerced, problems = {}, []
        for name, raw in value.items():
            try:
                coerced[name] = _coerce(str(known[name].type), raw)
            except (TypeError, ValueError):
                problems.append(f"{_option(name)} takes {_KIND_WORDS[str(known[name].type)]}, not {raw!r}")
        if problems:
            raise UserError(_cannot_work(problems))
        return SearchContext(**coerced)
    raise UserError(f"A run's settings are a mapping of setting names to values, not {type(value).__name__}.")


_KIND_WORDS = {
    "int": "a whole number", "float": "a number", "float | None": "a number or nothing", "bool": "true or false",
    "bool | None": "true, false or nothing", "str": "text", "tuple[str, ...]": "a list of texts",
    **{kind: ", ".join(get_args(choices)[:-1]) + " or " + get_args(choices)[-1] for kind, choices in CHOICES.items()},
}  # fmt: skip


def _coerce(kind: str, raw: Any) -> Any:
    """`raw` as a value of the field type `kind`; TypeError or ValueError if it is not one."""
    if raw is None and kind.endswith("| None"):
        return None
    if kind in ("bool", "bool | None"):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise TypeError(raw)
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise TypeError(raw)
        if isinstance(raw, int):
            return raw
        number = float(raw)  # "8", "8.0" and "3e18" are whole numbers; "8.5", "nan" and "inf" are not
        if not number.is_integer():
            raise ValueError(raw)
        return int(number)
    if kind in ("float", "float | None"):
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise TypeError(raw)
        return float(raw)
    if kind == "str":
        if not isinstance(raw, str):
            raise TypeError(raw)
        return raw
    if kind in CHOICES:  # one of its words: `validate` says which ones when it is not
        if not isinstance(raw, str):
            raise TypeError(raw)
        return raw
    if kind == "tuple[str, ...]":
        if isinstance(raw, str):  # one prompt, not one prompt per character
            return (raw,)
        if not isinstance(raw, (list, tuple)) or not all(isinstance(item, str) for item in raw):
            raise TypeError(raw)
        return tuple(raw)
    raise TypeError(kind)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cannot_work(problems: list[str]) -> str:
    return (
        "These settings cannot work: " + "; ".join(problems) + ". Fix them and run again "
        "(in LangGraph Studio, the form's field of the same name, with _ for -)."
    )


def validate(ctx: SearchContext) -> None:
    """Reject settings that cannot make sense, before anything is loaded: every way into a search
    (run.py, NeuronSearch, LangGraph Studio) calls this through services/run_folder.open_run."""
    problems = []
    for f in fields(SearchContext):
        value = getattr(ctx, f.name)
        try:
            _coerce(str(f.type), value)
        except (TypeError, ValueError):
            problems.append(f"{_option(f.name)} takes {_KIND_WORDS[str(f.type)]}, not {value!r}")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{_option(f.name)} must be a finite number, not {value}")
        elif f.name in LIMITS and value is not None and value > LIMITS[f.name]:
            problems.append(f"{_option(f.name)} must be at most {LIMITS[f.name]:,}")
    if problems:  # the checks below compare numbers: they need numbers
        raise UserError(_cannot_work(problems))
    if ctx.run_id:
        check_name(ctx.run_id)
    if ctx.batch_size < 1:
        problems.append("--batch-size must be at least 1")
    if ctx.top_k < 1:
        problems.append("--top-k must be at least 1")
    if ctx.max_prompt_tokens < 1:
        problems.append("--max-prompt-tokens must be at least 1")
    for name in (
        "iterations", "max_prompts", "max_llm_calls", "time_limit", "patience", "max_attempts", "explain_every", "threads",
        "edits", "combine", "lead_patience", "lead_distance", "lead_distance_stall",
    ):  # fmt: skip
        if getattr(ctx, name) < 0:
            problems.append(f"--{name.replace('_', '-')} cannot be negative")
    for name in ("similarity_threshold", "lead_distance_share"):
        if not 0.0 <= getattr(ctx, name) <= 1.0:
            problems.append(f"--{name.replace('_', '-')} must lie in [0, 1]")
    if not 0.0 <= ctx.low_percentile < ctx.high_percentile <= 100.0:
        problems.append("--bucket-percentiles must be LOW,HIGH with 0 <= LOW < HIGH <= 100")
    buckets = {b.strip() for b in ctx.filter_buckets.split(",") if b.strip()}
    if not buckets <= {"low", "mid", "high"}:
        problems.append("--filter-buckets takes low, mid and/or high, comma-separated")
    if ctx.strategy not in ("llm", "gradient", "mixed"):
        problems.append("--strategy is llm, gradient or mixed")
    if ctx.position not in ("max", "last"):
        problems.append("--position is max or last")
    if min(ctx.population, ctx.children, ctx.lead_children, ctx.readable_every, ctx.gradient_top_k, ctx.swaps) < 1:
        problems.append("--population, --children, --lead-children, --readable-every, --gradient-top-k and --swaps must be at least 1")
    try:
        fluency_weights(ctx)
    except ValueError:
        problems.append("--fluency-range must be LOW,HIGH with 0 <= LOW <= HIGH (e.g. 0.1,10)")
    if ctx.temperature < 0:
        problems.append("--temperature cannot be negative")
    if problems:
        raise UserError(_cannot_work(problems))

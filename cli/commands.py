"""The subcommands but `sweep` (cli/sweep.py): each a `configure(parser)` that adds its options and a
`run(args, console) -> int`. Heavy modules are imported inside them, so `--help` stays quick."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.text import Text

from neuron_search.context import SearchContext, describe
from neuron_search.services.errors import UserError

from .options import add_search_options, settings_from


# search (the default) ---------------------------------------------------------------------------------

SEARCH_DESCRIPTION = (
    "Search for text prompts that maximally activate one MLP neuron of a transformer. Every option below "
    "is a setting of context.py, grouped as there; each left out keeps its default (or, with --resume, the run's)."
)


def configure_search(p: argparse.ArgumentParser) -> None:
    add_search_options(p)
    run = p.add_argument_group("This run")
    run.add_argument("--resume", metavar="RUN_ID", help="Continue the run with this id; any option but --model, --layer, --neuron and --position may change.")
    run.add_argument("--list", action="store_true", help="List the runs in --results-dir and exit (as `run.py list`).")
    run.add_argument("--stats-every", type=int, default=50, metavar="N", help="Print the statistics every N iterations (0: never; default: 50).")
    run.add_argument("--quiet", action="store_true", help="No live progress line.")


def run_search(args: argparse.Namespace, console) -> int:
    if args.list:
        return list_runs(Path(args.results_dir or SearchContext.results_dir), console)
    from neuron_search.api import STOPPED_BY_USER, NeuronSearch
    from neuron_search.services.reports.display import RichProgress
    from neuron_search.services.reports.result_files import RESULT_FILES
    from neuron_search.services.reports.results import print_summary

    settings = settings_from(args)
    if args.resume:
        search = NeuronSearch.resume(args.resume, **settings)
    else:
        search = NeuronSearch(**settings)
    progress = False if args.quiet else RichProgress(stats_every=args.stats_every, console=console)
    result = search.run(progress=progress)  # writes the results files as it ends
    print_summary(result, console)
    console.print(Text.assemble("Results written to ", (str(result.run_dir), "bold"), ": " + ", ".join(RESULT_FILES.values())))
    if result.stop_reason == STOPPED_BY_USER:
        folder = "" if result.run_dir.parent == Path(SearchContext.results_dir) else f" --results-dir {result.run_dir.parent}"
        command = f"python run.py --resume {result.run_id}{folder}"
        console.print(Text.assemble("Stopped after the batch in flight. Continue with: ", (command, "bold")))
    return 0


# list ---------------------------------------------------------------------------------------------------


def configure_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default=None, metavar="DIR", help=f"{describe('results_dir')} (default: {SearchContext.results_dir})")


def run_list(args: argparse.Namespace, console) -> int:
    return list_runs(Path(args.results_dir or SearchContext.results_dir), console)


def list_runs(results_dir: Path, console) -> int:
    from rich.table import Table

    from neuron_search.services.reports.results import run_summary

    table = Table(title=Text(f"Runs in {results_dir}/"), title_justify="left")
    for column in ("run id", "model", "layer", "neuron", "prompts", "best", "date"):
        table.add_column(column, justify="right" if column in ("layer", "neuron", "prompts", "best") else "left")
    for run_json in sorted(results_dir.glob("*/run.json")):
        summary = run_summary(run_json.parent)
        table.add_row(*(Text(cell) for cell in summary))
    console.print(table)
    return 0


# report -------------------------------------------------------------------------------------------------


def configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id")
    p.add_argument("--results-dir", default=SearchContext.results_dir)


def run_report(args: argparse.Namespace, console) -> int:
    from neuron_search.services.reports.results import write_run_results
    from neuron_search.services.storage.files import inside
    from neuron_search.services.storage.run_folder import read_settings, run_lock

    run_dir = inside(args.results_dir, args.run_id)
    read_settings(run_dir, "to report")
    with run_lock(run_dir):
        paths = write_run_results(run_dir)
    console.print(Text(f"Wrote {paths['html']}"))
    return 0


# explain ------------------------------------------------------------------------------------------------


def configure_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id")
    p.add_argument("--results-dir", default=SearchContext.results_dir)
    p.add_argument("--llm", default=None, help=f"{describe('llm')} (default: the run's)")
    p.add_argument("--device", default=None, help=f"{describe('device')} (default: the run's)")
    p.add_argument("--threads", type=int, default=None, help=f"{describe('threads')} (default: the run's)")


def run_explain(args: argparse.Namespace, console) -> int:
    from neuron_search.services.dataset.corpus import run_corpus
    from neuron_search.services.dataset.exemplars import real_text_holdout
    from neuron_search.services.explain.run_explanation import REAL_TEXT_POOL, explain_run, measurer
    from neuron_search.services.llm.proposer import resolve_llm
    from neuron_search.services.reports.explanation_view import explanation_table
    from neuron_search.services.reports.results import write_run_results
    from neuron_search.services.runtime import subject_model, use_threads
    from neuron_search.services.storage.files import inside
    from neuron_search.services.storage.run_folder import read_settings, run_lock

    run_dir = inside(args.results_dir, args.run_id)
    settings = read_settings(run_dir, "to explain")
    if not (run_dir / "records.sqlite").is_file():
        raise UserError(f"There is no run {args.run_id!r} with records in {args.results_dir}/. `python run.py --list` shows the runs there.")
    # Before the model and the embedded LLM load: the LLM takes its thread count when it loads.
    use_threads(settings.get("threads", 0) if args.threads is None else args.threads)
    subject = subject_model(settings["model"], args.device or settings["device"])
    subject.validate(settings["layer"], settings["neuron"])
    measure = measurer(subject, settings["layer"], settings["neuron"], settings["position"], settings["batch_size"])
    corpus = run_corpus(settings.get("corpus", ""), settings.get("text_column", ""))  # the search's own, if any
    real_text = real_text_holdout(
        subject, settings["layer"], settings["neuron"], n=REAL_TEXT_POOL, seed=settings["seed"], source=corpus
    )
    with run_lock(run_dir), console.status("Explaining the neuron and scoring that on held-out prompts ..."):
        final = explain_run(run_dir, resolve_llm(args.llm or settings["llm"]), measure, seed=settings["seed"], real_text=real_text)
        paths = write_run_results(run_dir)
    console.print(explanation_table(final))
    console.print(Text(f"Wrote {run_dir / 'explanation.json'} and {paths['html']}"))
    return 0


# evidence -----------------------------------------------------------------------------------------------


def configure_evidence(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id")
    p.add_argument("--results-dir", default=SearchContext.results_dir)
    p.add_argument("--json", action="store_true", help="Print the evidence block as JSON (as results.json holds it) instead of tables.")


def run_evidence(args: argparse.Namespace, console) -> int:
    import json
    import sys

    from neuron_search.services.reports.evidence_tables import evidence_renderables, run_evidence_document
    from neuron_search.services.storage.files import inside

    run_dir = inside(args.results_dir, args.run_id)
    evidence, source = run_evidence_document(run_dir)
    if args.json:
        sys.stdout.write(json.dumps(evidence, indent=2, ensure_ascii=False) + "\n")
        return 0
    console.print(Text(f"Evidence of run {args.run_id}, from {run_dir / source}", style="bold"))
    for part in evidence_renderables(evidence):
        console.print(part)
    return 0


# exemplars ----------------------------------------------------------------------------------------------


def exemplars_description() -> str:
    from neuron_search.services.dataset.corpus import MAX_TOKENS

    return (
        "Scan real text with the subject model and show the neuron's top snippets "
        f"(at most {MAX_TOKENS} tokens each) with their tokens coloured by activation, Neuroscope-style: "
        "the baseline a found prompt is compared against."
    )


def configure_exemplars(p: argparse.ArgumentParser) -> None:
    from neuron_search.services.dataset.corpus import DEFAULT_MAX_SNIPPETS

    p.add_argument("--neuron", type=int, default=SearchContext.neuron, metavar="N", help=f"{describe('neuron')} (default: {SearchContext.neuron})")
    p.add_argument("--layer", type=int, default=SearchContext.layer, metavar="L", help=f"{describe('layer')} (default: {SearchContext.layer})")
    p.add_argument("--model", default=SearchContext.model, metavar="M", help=f"{describe('model')} (default: {SearchContext.model})")
    p.add_argument("--device", default=SearchContext.device, metavar="D", help=f"{describe('device')} (default: {SearchContext.device})")
    p.add_argument(
        "--corpus",
        metavar="PATH",
        help="A UTF-8 text file (paragraphs separated by blank lines), a folder of .txt, .md and .py files "
        "(.py files give their docstrings and comments), a .jsonl, .json or .parquet file, or "
        "hf:NAME[:CONFIG[:SPLIT]] for a Hugging Face dataset, streamed up to --max-snippets (for instance "
        "hf:NeelNanda/pile-10k); default: the Python standard library's docstrings and comments.",
    )
    p.add_argument("--text-column", metavar="NAME", help=f"{describe('text_column')}")
    p.add_argument("--top-k", type=int, default=SearchContext.top_k, metavar="K", help=f"How many top snippets are shown and saved (default: {SearchContext.top_k}).")
    p.add_argument(
        "--max-snippets",
        type=int,
        default=DEFAULT_MAX_SNIPPETS,
        metavar="N",
        help="Scan at most this many snippets, evenly spread over the corpus (0: all of them; "
        f"default: {DEFAULT_MAX_SNIPPETS}). A scan is cached per model, layer, corpus and cap, so other "
        "neurons of the same layer come back at once.",
    )
    p.add_argument("--results-dir", default=SearchContext.results_dir, metavar="DIR", help=f"Folder under which exemplars/<model>-L<layer>-N<neuron>/ is written (default: {SearchContext.results_dir}).")


def run_exemplars(args: argparse.Namespace, console) -> int:
    from neuron_search.services.dataset.corpus import check_cap, corpus_source
    from neuron_search.services.dataset.exemplars import exemplars
    from neuron_search.services.reports.display import exemplars_table
    from neuron_search.services.reports.exemplars_page import write_exemplars
    from neuron_search.services.runtime import subject_model

    source = corpus_source(args.corpus, args.text_column)  # a mistyped path is reported before the model loads
    check_cap(source, args.max_snippets)
    subject = subject_model(args.model, args.device)
    result = exemplars(subject, args.layer, args.neuron, source, args.top_k, args.max_snippets, console=console)
    console.print(exemplars_table(result.records, f"Top {len(result.records)} of {result.scanned:,} snippets: {result.corpus}"))
    paths = write_exemplars(result, args.results_dir)
    console.print(Text(f"Wrote {paths['json']} and {paths['html'].name}"))
    return 0

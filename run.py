"""Find prompts that make one neuron fire: the command line.

    python run.py --neuron 840                      # GPT-2 small, layer 9
    python run.py --neuron 840 --model embedded     # offline, on the bundled model
    python run.py --resume RUN_ID                   # continue a stopped run
    python run.py --list                            # past runs
    python run.py report RUN_ID                     # rebuild a run's report.html
    python run.py exemplars --neuron 840            # the neuron's top snippets of real text
    python run.py explain RUN_ID                    # explain a finished run's neuron, and score that
    python run.py sweep --layer 9 --neurons 0:64    # search many neurons of a layer, on Ray
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from dotenv import load_dotenv
from rich.text import Text

# LangSmith reads its settings once, on first import: .env must be loaded before anything else.
load_dotenv()

from context import SearchContext, describe  # noqa: E402
from services.errors import UserError  # noqa: E402

MAX_HINT_BYTES = 64 * 1024

# Fields with an option of their own below, or none at all.
SPECIAL = {"seed_prompts", "builtin_seeds", "low_percentile", "high_percentile", "hint"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Search for text prompts that maximally activate one MLP neuron of a transformer. "
        "Subcommands: `run.py report RUN_ID` rebuilds a run's report, `run.py exemplars` shows a neuron's "
        "top snippets of real text, `run.py explain RUN_ID` explains a finished run's neuron and scores that, "
        "`run.py sweep --layer L --neurons SPEC` searches many neurons of a layer, `run.py --list` lists runs.",
    )
    add_search_options(p)
    p.add_argument("--stats-every", type=int, default=50, metavar="N", help="Print the statistics every N iterations (0: never; default: 50).")
    p.add_argument("--resume", metavar="RUN_ID", help="Continue the run with this id; any option but --model, --layer, --neuron and --position may change.")
    p.add_argument("--list", action="store_true", help="List the runs in --results-dir and exit.")
    p.add_argument("--quiet", action="store_true", help="No live progress line.")
    return p


def add_search_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per SearchContext field (its description is the help), except those in `skip`."""
    for f in dataclasses.fields(SearchContext):
        if f.name in SPECIAL or f.name in skip:
            continue
        if str(f.type) in ("bool", "bool | None"):
            default = "" if f.default is None else f" (default: {'on' if f.default else 'off'})"
            p.add_argument(
                "--" + f.name.replace("_", "-"),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{f.metadata['description']}{default}",
            )
            continue
        kind = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=None,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['description']} (default: {'none' if f.default is None else f.default})",
            metavar=f.name.upper() if kind is not str or "choices" not in f.metadata else None,
        )
    hint = p.add_mutually_exclusive_group()
    hint.add_argument("--hint", metavar="TEXT", help=describe("hint"))
    hint.add_argument("--hint-file", metavar="PATH", help="Read the hint from a text file (instead of --hint).")
    p.add_argument("--seed-prompts", metavar="FILE", help="A UTF-8 file of extra seed prompts, one per line, measured first.")
    p.add_argument("--no-builtin-seeds", action="store_true", help="Skip the built-in seed prompts: the search starts from --seed-prompts, or from the LLM alone.")
    p.add_argument(
        "--bucket-percentiles",
        metavar="LOW,HIGH",
        help="Percentiles of activations seen so far that bound the low and high buckets (default: 15,85).",
    )


def settings_from(args: argparse.Namespace) -> dict:
    """The SearchContext settings the user gave explicitly."""
    names = {f.name for f in dataclasses.fields(SearchContext)} - SPECIAL
    settings = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.hint_file:
        try:
            if Path(args.hint_file).stat().st_size > MAX_HINT_BYTES:
                raise UserError(
                    f"The hint file {args.hint_file} is over {MAX_HINT_BYTES // 1024} KB: a hint is a few sentences "
                    "put into every LLM request. Shorten it."
                )
            settings["hint"] = Path(args.hint_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"Cannot read the hint file {args.hint_file} ({error}). Give --hint-file a UTF-8 text file.") from None
    if args.hint is not None:
        settings["hint"] = args.hint
    if args.seed_prompts:
        from services.search.seeds import read_seed_file

        settings["seed_prompts"] = read_seed_file(args.seed_prompts)
    if args.no_builtin_seeds:
        settings["builtin_seeds"] = False
    if args.bucket_percentiles:
        try:
            low, high = (float(x) for x in args.bucket_percentiles.split(","))
        except ValueError:
            raise UserError(f"--bucket-percentiles takes two numbers as LOW,HIGH (e.g. 15,85), not {args.bucket_percentiles!r}.") from None
        settings["low_percentile"], settings["high_percentile"] = low, high
    return settings


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.logging import RichHandler

    from services.reports.display import error_text

    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=console, show_path=False, show_time=False)])
    try:
        if argv[:1] == ["report"]:
            return report_command(argv[1:], console)
        if argv[:1] == ["exemplars"]:
            return exemplars_command(argv[1:], console)
        if argv[:1] == ["explain"]:
            return explain_command(argv[1:], console)
        if argv[:1] == ["sweep"]:
            return sweep_command(argv[1:], console)
        args = parser().parse_args(argv)
        results_dir = args.results_dir or SearchContext.results_dir
        if args.list:
            return list_runs(Path(results_dir), console)
        return search_command(args, console)
    except UserError as error:
        console.print(error_text("Error:", error), highlight=False)
        return 2


def search_command(args: argparse.Namespace, console) -> int:
    from neuron_search import STOPPED_BY_USER, NeuronSearch
    from services.reports.display import RichProgress
    from services.reports.result_files import RESULT_FILES
    from services.reports.results import print_summary

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


def sweep_parser() -> argparse.ArgumentParser:
    from services.sweep.neuron_spec import HELP

    p = argparse.ArgumentParser(
        prog="run.py sweep",
        description="Search many neurons of one layer: each neuron is a normal run (with every search option "
        "below) in results/SWEEP_ID/neurons/N/; every prompt measured for one neuron also updates the other "
        "neurons' tables of top prompts, and each neuron's search starts from its table. Ends with "
        "results/SWEEP_ID/index.html and index.csv.",
    )
    p.add_argument("--neurons", metavar="SPEC", help=f"The neurons to search: {HELP}.")
    p.add_argument(
        "--ray",
        default="local",
        metavar="WHERE",
        help="'local' (a Ray instance started on this machine, with --workers workers), 'off' (neurons one after "
        "another in this process, no Ray) or a running cluster's address (ray://HOST:10001, or auto) (default: local).",
    )
    p.add_argument("--workers", type=int, default=2, metavar="N", help="Ray workers, each a process that loads the subject model once and runs neurons one after another (default: 2).")
    p.add_argument("--shared", action=argparse.BooleanOptionalAction, default=None, help="Every prompt measured for one neuron also enters the other neurons' tables of top prompts, which seed their searches (default: on).")
    p.add_argument("--shared-top", type=int, default=None, metavar="K", help="Prompts kept per neuron in that table (default: 20).")
    p.add_argument("--resume", metavar="SWEEP_ID", help="Continue this sweep: done neurons are skipped, interrupted ones resume from their checkpoints.")
    p.add_argument("--sweep-id", metavar="NAME", help="Name of the new sweep's folder under --results-dir (default: sweep- and a new id).")
    p.add_argument("--quiet", action="store_true", help="No live progress line.")
    add_search_options(p, skip=("neuron", "run_id", "sweep_table", "explain"))
    from services.sweep.scheduler import explanation_calls

    p.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Explain each neuron after its search (the LLM's one sentence, scored beside a control: about "
        "{0} LLM calls a neuron, up to {1} with real text, fewer with a small --max-prompts) (default: off "
        "in a sweep; `run.py explain RUN_ID` explains one neuron later).".format(*explanation_calls({"max_prompts": 0})),
    )
    return p


def sweep_command(argv: list[str], console) -> int:
    from context import validate
    from services.reports.display import SweepProgress, top_neurons_table
    from services.reports.sweep_index import write_index
    from services.storage.run_folder import new_run_id
    from services.sweep.neuron_spec import parse_neurons
    from services.sweep.scheduler import explanation_calls, run_sweep, worker_threads
    from services.sweep.shared_tops import SharedTops
    from services.sweep.sweep_folder import TABLE_FILE, SweepPlan, read_plan, sweep_dir, write_plan
    from services.sweep.worker import layer_width

    args = sweep_parser().parse_args(argv)
    settings = settings_from(args)
    if "threads" in settings:
        from services.runtime import check_threads

        check_threads(settings["threads"])  # before any worker would refuse it
    results_dir = settings.pop("results_dir", SearchContext.results_dir)
    if args.resume:
        if args.neurons:
            raise UserError("A resumed sweep searches the neurons it was started with: leave --neurons out with --resume.")
        folder = sweep_dir(results_dir, args.resume)
        plan = read_plan(folder)
        for name in ("model", "layer", "position"):
            if name in settings and settings[name] != (plan.layer if name == "layer" else plan.settings.get(name)):
                raise UserError(f"Sweep {plan.sweep_id} measures with its own --{name}; leave --{name} out to resume it.")
        settings.pop("layer", None)
        plan.settings.update(settings)
        plan.settings.setdefault("explain", False)  # a sweep explains its neurons only when asked (--explain)
        if args.shared is not None:
            plan.shared = args.shared
    else:
        if not args.neurons:
            raise UserError("Say which neurons to sweep: --neurons SPEC (e.g. 0:64, 12,840,1001 or all).")
        layer = settings.pop("layer", SearchContext.layer)
        settings.setdefault("seed_prompts", ())
        # Unlike a single search, a sweep explains its neurons only when asked: each explanation is a few
        # dozen LLM calls, longer than a small neuron's whole search with the embedded LLM.
        settings.setdefault("explain", False)
        validate(SearchContext(**settings, layer=layer))  # bad settings are reported before any model loads
        sweep_id = args.sweep_id or "sweep-" + new_run_id()
        folder = sweep_dir(results_dir, sweep_id)  # a sweep id that is not a plain name is refused here
        # The layer and the neurons are checked against the model before the sweep's folder gets a file.
        neurons = parse_neurons(args.neurons, layer_width(settings, layer))
        if (folder / "sweep.json").is_file():
            raise UserError(f"Sweep {sweep_id} exists already in {results_dir}/: continue it with --resume {sweep_id}, or name a new one.")
        plan = SweepPlan(
            sweep_id=sweep_id,
            layer=layer,
            neurons=neurons,
            settings={**settings, "seed_prompts": list(settings["seed_prompts"])},
            shared=args.shared is not False,
            shared_top=args.shared_top or 20,
        )
    write_plan(folder, plan)
    if plan.shared:
        SharedTops.create(folder / TABLE_FILE, plan.neurons, plan.shared_top).close()
    threads = worker_threads(plan.settings, args.ray, args.workers)
    each = f", {threads} torch thread(s) each" if threads else ""
    where = "no Ray" if args.ray == "off" else f"Ray {args.ray}, {args.workers} worker(s){each}"
    console.print(Text.assemble("Sweep ", (plan.sweep_id, "bold"), f": layer {plan.layer}, {len(plan.neurons)} neurons, {where}, shared measurements {'on' if plan.shared else 'off'}"))
    if plan.settings.get("explain"):
        console.print(
            "Explaining each neuron: about {} LLM calls a neuron (up to {} when real text the explainer did not see "
            "scores it too), after its search, with --llm {}; --no-explain leaves it out, and `run.py explain RUN_ID` "
            "explains one neuron later.".format(*explanation_calls(plan.settings), plan.settings.get("llm", SearchContext.llm)),
            highlight=False,
            markup=False,
        )
    outcome = run_sweep(folder, args.ray, args.workers, None if args.quiet else SweepProgress(console))
    paths = write_index(folder)
    done = [s for s in outcome.statuses if s.status == "done" and s.best is not None]
    console.print(top_neurons_table(outcome.statuses, plan.sweep_id))
    failed = [s for s in outcome.statuses if s.status == "failed"]
    for s in failed:
        console.print(error_text(f"Neuron {s.neuron} failed:", s.error), highlight=False)
    console.print(Text.assemble(f"{len(done)} of {len(outcome.statuses)} neurons done. Index: ", (str(paths["html"]), "bold"), f" and {paths['csv'].name}"))
    if outcome.stopped or len(done) + len(failed) < len(outcome.statuses) or failed:
        extra = "" if results_dir == SearchContext.results_dir else f" --results-dir {results_dir}"
        console.print(Text.assemble("Continue with: ", (f"python run.py sweep --resume {plan.sweep_id}{extra}", "bold")))
    return 0


def report_command(argv: list[str], console) -> int:
    from services.reports.results import write_run_results
    from services.storage.files import inside
    from services.storage.run_folder import read_settings, run_lock

    p = argparse.ArgumentParser(prog="run.py report", description="Rebuild results.json, records.csv and report.html of a past run.")
    p.add_argument("run_id")
    p.add_argument("--results-dir", default=SearchContext.results_dir)
    args = p.parse_args(argv)
    run_dir = inside(args.results_dir, args.run_id)
    read_settings(run_dir, "to report")
    with run_lock(run_dir):
        paths = write_run_results(run_dir)
    console.print(Text(f"Wrote {paths['html']}"))
    return 0


def explain_command(argv: list[str], console) -> int:
    from services.dataset.exemplars import real_text_holdout
    from services.explain.run_explanation import explain_run, measurer
    from services.llm.proposer import resolve_llm
    from services.reports.explanation_view import explanation_table
    from services.reports.results import write_run_results
    from services.runtime import subject_model
    from services.storage.files import inside
    from services.storage.run_folder import read_settings, run_lock

    p = argparse.ArgumentParser(
        prog="run.py explain",
        description="Explain what a finished run's neuron detects (the LLM reads its top prompts and a sample "
        "across activations), score that beside a control on held-out prompts (detection; also on real-text "
        "snippets when the layer's corpus scan is cached) and on new prompts written from it and measured "
        "(generation), and add it to the run's results and report.",
    )
    p.add_argument("run_id")
    p.add_argument("--results-dir", default=SearchContext.results_dir)
    p.add_argument("--llm", default=None, help=f"{describe('llm')} (default: the run's)")
    p.add_argument("--device", default=None, help=f"{describe('device')} (default: the run's)")
    args = p.parse_args(argv)
    run_dir = inside(args.results_dir, args.run_id)
    settings = read_settings(run_dir, "to explain")
    if not (run_dir / "records.sqlite").is_file():
        raise UserError(f"There is no run {args.run_id!r} with records in {args.results_dir}/. `python run.py --list` shows the runs there.")
    subject = subject_model(settings["model"], args.device or settings["device"])
    subject.validate(settings["layer"], settings["neuron"])
    measure = measurer(subject, settings["layer"], settings["neuron"], settings["position"], settings["batch_size"])
    real_text = real_text_holdout(subject, settings["layer"], settings["neuron"], seed=settings["seed"])
    with run_lock(run_dir), console.status("Explaining the neuron and scoring that on held-out prompts ..."):
        final = explain_run(run_dir, resolve_llm(args.llm or settings["llm"]), measure, seed=settings["seed"], real_text=real_text)
        paths = write_run_results(run_dir)
    console.print(explanation_table(final))
    console.print(Text(f"Wrote {run_dir / 'explanation.json'} and {paths['html']}"))
    return 0


def exemplars_command(argv: list[str], console) -> int:
    from services.dataset.corpus import DEFAULT_MAX_SNIPPETS, MAX_TOKENS, corpus_source
    from services.reports.display import exemplars_table
    from services.dataset.exemplars import exemplars
    from services.reports.exemplars_page import write_exemplars
    from services.model.subject_model import SubjectModel

    p = argparse.ArgumentParser(
        prog="run.py exemplars",
        description="Scan real text with the subject model and show the neuron's top snippets "
        f"(at most {MAX_TOKENS} tokens each) with their tokens coloured by activation, Neuroscope-style: "
        "the baseline a found prompt is compared against.",
    )
    p.add_argument("--neuron", type=int, default=SearchContext.neuron, metavar="N", help=f"{describe('neuron')} (default: {SearchContext.neuron})")
    p.add_argument("--layer", type=int, default=SearchContext.layer, metavar="L", help=f"{describe('layer')} (default: {SearchContext.layer})")
    p.add_argument("--model", default=SearchContext.model, metavar="M", help=f"{describe('model')} (default: {SearchContext.model})")
    p.add_argument("--device", default=SearchContext.device, metavar="D", help=f"{describe('device')} (default: {SearchContext.device})")
    p.add_argument(
        "--corpus",
        metavar="PATH",
        help="A UTF-8 text file (paragraphs separated by blank lines) or a folder of .txt, .md and .py files "
        "(.py files give their docstrings and comments); default: the Python standard library's docstrings and comments.",
    )
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
    args = p.parse_args(argv)
    source = corpus_source(args.corpus)  # a mistyped path is reported before the model loads
    subject = SubjectModel.load(args.model, args.device)
    result = exemplars(subject, args.layer, args.neuron, source, args.top_k, args.max_snippets, console=console)
    console.print(exemplars_table(result.records, f"Top {len(result.records)} of {result.scanned:,} snippets: {result.corpus}"))
    paths = write_exemplars(result, args.results_dir)
    console.print(Text(f"Wrote {paths['json']} and {paths['html'].name}"))
    return 0


def list_runs(results_dir: Path, console) -> int:
    from rich.table import Table

    from services.reports.results import run_summary

    table = Table(title=Text(f"Runs in {results_dir}/"), title_justify="left")
    for column in ("run id", "model", "layer", "neuron", "prompts", "best", "date"):
        table.add_column(column, justify="right" if column in ("layer", "neuron", "prompts", "best") else "left")
    for run_json in sorted(results_dir.glob("*/run.json")):
        summary = run_summary(run_json.parent)
        table.add_row(*(Text(cell) for cell in summary))
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

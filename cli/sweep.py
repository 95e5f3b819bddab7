"""`run.py sweep`: its options, and the calls that plan (runs/sweep_plan.py), run and summarize a sweep."""

from __future__ import annotations

import argparse

from rich.text import Text

from neuron_search.context import SearchContext
from neuron_search.services.errors import UserError

from .options import add_search_options, section_of, settings_from

DESCRIPTION = (
    "Search many neurons of one layer: each neuron is a normal run (with every search option "
    "below) in results/SWEEP_ID/neurons/N/; every prompt measured for one neuron also updates the other "
    "neurons' tables of top prompts, and each neuron's search starts from its table. Ends with "
    "results/SWEEP_ID/index.html and index.csv."
)


def configure(p: argparse.ArgumentParser) -> None:
    from neuron_search.runs.sweep_scheduler import explanation_calls
    from neuron_search.services.sweep.neuron_spec import HELP

    sweep = p.add_argument_group("The sweep")
    sweep.add_argument("--neurons", metavar="SPEC", help=f"The neurons to search: {HELP}.")
    sweep.add_argument(
        "--ray",
        default="local",
        metavar="WHERE",
        help="'local' (a Ray instance started on this machine, with --workers workers), 'off' (neurons one after "
        "another in this process, no Ray) or a running cluster's address (ray://HOST:10001, or auto) (default: local).",
    )
    sweep.add_argument("--workers", type=int, default=2, metavar="N", help="Ray workers, each a process that loads the subject model once and runs neurons one after another (default: 2).")
    sweep.add_argument("--shared", action=argparse.BooleanOptionalAction, default=None, help="Every prompt measured for one neuron also enters the other neurons' tables of top prompts, which seed their searches (default: on).")
    sweep.add_argument("--shared-top", type=int, default=None, metavar="K", help="Prompts kept per neuron in that table (default: 20).")
    sweep.add_argument("--resume", metavar="SWEEP_ID", help="Continue this sweep: done neurons are skipped, interrupted ones resume from their checkpoints.")
    sweep.add_argument("--sweep-id", metavar="NAME", help="Name of the new sweep's folder under --results-dir (default: sweep- and a new id).")
    sweep.add_argument("--quiet", action="store_true", help="No live progress line.")
    groups = add_search_options(p, skip=("neuron", "run_id", "sweep_table", "explain"))
    groups[section_of("explain")].add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Explain each neuron after its search (the LLM's one sentence, scored beside a control: about "
        "{0} LLM calls a neuron, up to {1} with real text, fewer with a small --max-prompts) (default: off "
        "in a sweep; `run.py explain RUN_ID` explains one neuron later).".format(*explanation_calls({"max_prompts": 0})),
    )


def run(args: argparse.Namespace, console) -> int:
    from neuron_search.runs import sweep_plan
    from neuron_search.runs.sweep_scheduler import explanation_calls, run_sweep, worker_threads
    from neuron_search.runs.sweep_worker import layer_width
    from neuron_search.services.reports.display import SweepProgress, error_text, top_neurons_table
    from neuron_search.services.reports.sweep_index import write_index
    from neuron_search.services.storage.shared_tops import SharedTops
    from neuron_search.services.storage.sweep_folder import TABLE_FILE, read_plan, sweep_dir, write_plan

    settings = settings_from(args)
    if "threads" in settings:
        from neuron_search.services.runtime import check_threads

        check_threads(settings["threads"])  # before any worker would refuse it
    results_dir = settings.pop("results_dir", SearchContext.results_dir)
    if args.resume:
        sweep_plan.check_resume(args.neurons)
        folder = sweep_dir(results_dir, args.resume)
        plan = sweep_plan.resumed_plan(read_plan(folder), settings, args.shared)
    else:
        from neuron_search.services.storage.run_folder import new_run_id

        layer, settings = sweep_plan.new_sweep_settings(settings, args.neurons)
        sweep_id = args.sweep_id or "sweep-" + new_run_id()
        folder = sweep_dir(results_dir, sweep_id)  # a sweep id that is not a plain name is refused here
        # The layer and the neurons are checked against the model before the sweep's folder gets a file.
        plan = sweep_plan.new_plan(sweep_id, layer, settings, args.neurons, layer_width(settings, layer), args.shared, args.shared_top)
        if (folder / "sweep.json").is_file():
            raise UserError(f"Sweep {sweep_id} exists already in {results_dir}/: continue it with --resume {sweep_id}, or name a new one.")
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
    tally = sweep_plan.tally(outcome.statuses, outcome.stopped)
    console.print(top_neurons_table(outcome.statuses, plan.sweep_id))
    for s in tally.failed:
        console.print(error_text(f"Neuron {s.neuron} failed:", s.error), highlight=False)
    console.print(Text.assemble(f"{len(tally.done)} of {len(outcome.statuses)} neurons done. Index: ", (str(paths["html"]), "bold"), f" and {paths['csv'].name}"))
    if tally.unfinished:
        console.print(Text.assemble("Continue with: ", (sweep_plan.resume_command(plan.sweep_id, results_dir), "bold")))
    return 0

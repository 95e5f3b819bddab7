"""The command line: `run.py` and the `neuron-search` console command.

    neuron-search --neuron 840                      # search (the default subcommand), GPT-2 small, layer 9
    neuron-search report RUN_ID                     # rebuild a run's report.html
    neuron-search sweep --layer 9 --neurons 0:64    # search many neurons of a layer, on Ray

`main(argv)` picks the subcommand (search when the first argument is an option, or there is none),
parses its options with argparse and runs it; a UserError ends in one paragraph and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from dotenv import load_dotenv

# LangSmith reads its settings once, on first import: .env must be loaded before anything else.
load_dotenv()

from neuron_search.context import SearchContext  # noqa: E402
from neuron_search.services.errors import UserError  # noqa: E402

from . import commands, sweep  # noqa: E402


class Command(NamedTuple):
    summary: str  # its line in `run.py --help`
    description: Callable[[], str] | str  # the top of `run.py COMMAND --help`
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, object], int]
    usage: str = ""  # where argparse's own would list every option


COMMANDS = {
    "search": Command(
        "search for prompts that drive one neuron (the default command)",
        commands.SEARCH_DESCRIPTION, commands.configure_search, commands.run_search,
        "{prog} [search] [OPTIONS]  (`{prog} --neuron 840` is `{prog} search --neuron 840`)",
    ),
    "report": Command(
        "rebuild a past run's results.json, records.csv and report.html",
        "Rebuild results.json, records.csv and report.html of a past run.", commands.configure_report, commands.run_report,
    ),
    "explain": Command(
        "explain a finished run's neuron, and score that",
        "Explain what a finished run's neuron detects (the LLM reads its top prompts and a sample "
        "across activations), score that beside a control on held-out prompts (detection; also on real-text "
        "snippets when the layer's corpus scan is cached) and on new prompts written from it and measured "
        "(generation), and add it to the run's results and report.",
        commands.configure_explain, commands.run_explain,
    ),
    "evidence": Command(
        "show a run's peak tokens, logit effects and context that matters",
        "Show what a finished run's neuron peaks on (and the tokens right before), the tokens its output promotes "
        "and suppresses, and each earlier token's effect on the activation at the peak, from the run's "
        "results.json (else its evidence.json); no model is loaded.",
        commands.configure_evidence, commands.run_evidence,
    ),
    "exemplars": Command(
        "show the neuron's top snippets of real text",
        commands.exemplars_description, commands.configure_exemplars, commands.run_exemplars,
    ),
    "sweep": Command(
        "search many neurons of one layer, on Ray", sweep.DESCRIPTION, sweep.configure, sweep.run,
        "{prog} sweep (--neurons SPEC | --resume SWEEP_ID) [OPTIONS]",
    ),
    "list": Command("list the runs in --results-dir (as --list)", "List the runs in --results-dir.", commands.configure_list, commands.run_list),
}
DEFAULT_COMMAND = "search"

# The search options most runs set, shown by `run.py --help`: (field or option, metavar, what it does).
COMMON = (
    ("neuron", "N", "the MLP neuron to drive"),
    ("layer", "L", "the transformer block whose MLP holds it"),
    ("model", "M", "a Hugging Face name, a folder or 'embedded'"),
    ("strategy", "S", "gradient, llm or mixed"),
    ("llm", "LLM", "auto, ollama:NAME or embedded"),
    ("max_prompts", "N", "the budget of measured prompts"),
    ("hint", "TEXT", "your notes on what the neuron seems to detect"),
    ("results_dir", "DIR", "the folder of the runs"),
    ("--resume", "RUN_ID", "continue a stopped run"),
    ("--list", "", "list the runs (as the list command)"),
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (default: sys.argv[1:]); returns the exit code."""
    from rich.console import Console
    from rich.logging import RichHandler

    from neuron_search.services.reports.display import error_text

    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=console, show_path=False, show_time=False)])
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return COMMANDS[args.command].run(args, console)
    except UserError as error:
        console.print(error_text("Error:", error), highlight=False)
        return 2


def parse(argv: list[str], prog: str | None = None) -> argparse.Namespace:
    """The command line's arguments: `args.command` names the command (search when none is given)."""
    argv = with_default_command(list(argv))
    return parser(only=argv[0] if argv and argv[0] in COMMANDS else "", prog=prog).parse_args(argv)


def help_text(command: str | None = None, prog: str = "run.py") -> str:
    """What `run.py --help` (`command` None) or `run.py COMMAND --help` prints."""
    top = parser(only=command or "", prog=prog)
    return (top if command is None else top.commands[command]).format_help()


def with_default_command(argv: list[str]) -> list[str]:
    """`argv` with the default command in front where it names none: no arguments, or an option first
    (`run.py --neuron 840`, `run.py --list`); `run.py --help` is the map of the commands."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return [DEFAULT_COMMAND, *argv]
    return argv


def prog_name() -> str:
    """`neuron-search` when run as that console command, else `run.py`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "neuron-search" if name.startswith("neuron-search") else "run.py"


def parser(only: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser, a subparser per command. With `only`, the other commands' options are
    left out (only "": every command's): `run.py --neuron 840` needs not import what `sweep` describes."""
    prog = prog or prog_name()
    top = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [COMMAND] [OPTIONS]",
        description="Find text prompts that maximally activate one MLP neuron of a transformer.",
        epilog=_epilog(prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The commands' map is the epilog's first part (argparse would wrap "exemplars" onto a line of its own).
    subparsers = top.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS, prog=prog)
    top.commands = {}  # each command's parser, by name
    for name, command in COMMANDS.items():
        p = top.commands[name] = subparsers.add_parser(name, help=command.summary, usage=command.usage.format(prog=prog) if command.usage else None)
        if only in (None, name):
            p.description = command.description() if callable(command.description) else command.description
            command.configure(p)
    top.set_defaults(command=DEFAULT_COMMAND)
    return top


def _epilog(prog: str) -> str:
    lines = [f"commands ({DEFAULT_COMMAND} when none is given):"]
    lines += [f"  {name:<12}{command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "most used options of search (each with its default):"]
    for name, metavar, what in COMMON:
        option = name if name.startswith("--") else "--" + name.replace("_", "-")
        default = "" if name.startswith("--") else f" ({getattr(SearchContext, name) or 'none'})"
        lines.append(f"  {(option + ' ' + metavar).strip():<22}{what}{default}")
    lines += [
        "",
        "examples:",
        f"  {prog} --neuron 840 --model embedded   # offline, on the bundled model",
        f"  {prog} --resume RUN_ID                 # continue a stopped run",
        f"  {prog} sweep --layer 9 --neurons 0:64  # many neurons of a layer",
        "",
        f"`{prog} search --help` lists every search option, one sentence each, in",
        f"sections; `{prog} COMMAND --help` another command's options.",
    ]
    return "\n".join(lines)

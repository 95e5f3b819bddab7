"""The search options: one per SearchContext field, grouped by context.py's sections, its description the help.

context.py groups SearchContext's fields under comment lines (`# What to search.`, `# The gradient
search.`, ...); `sections()` reads them from its source once, so a field added there lands in its
section here without a table to keep.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from functools import cache
from pathlib import Path

from neuron_search.context import SearchContext, describe
from neuron_search.services.errors import UserError

MAX_HINT_BYTES = 64 * 1024

# Fields with an option of their own (below, in `_add_special`), or none at all.
SPECIAL = {"seed_prompts", "builtin_seeds", "low_percentile", "high_percentile", "hint"}

OTHER_SECTION = "Other settings"  # the section of a field context.py's source puts under no comment

_SECTION_LINE = re.compile(r"    # (?P<title>[^ ].*?)\.?\s*")
_FIELD_LINE = re.compile(r"    (?P<name>[A-Za-z_]\w*)\s*:")


@cache
def sections() -> dict[str, tuple[str, ...]]:
    """Section title -> the SearchContext fields under it, in context.py's order."""
    names = [f.name for f in dataclasses.fields(SearchContext)]
    try:
        source = inspect.getsource(SearchContext)
    except (OSError, TypeError):  # no source (a frozen build): one section
        return {OTHER_SECTION: tuple(names)}
    found: dict[str, list[str]] = {}
    title = OTHER_SECTION
    for line in source.splitlines():
        if match := _SECTION_LINE.fullmatch(line):
            title = match["title"]
        elif (match := _FIELD_LINE.match(line)) and match["name"] in names:
            found.setdefault(title, []).append(match["name"])
    missing = [n for n in names if not any(n in group for group in found.values())]
    if missing:
        found.setdefault(OTHER_SECTION, []).extend(missing)
    return {title: tuple(group) for title, group in found.items()}


def section_of(name: str) -> str:
    return next(title for title, group in sections().items() if name in group)


def option_of(name: str) -> str | None:
    """The command-line option that sets field `name` (None: set together with another field's)."""
    return {
        "builtin_seeds": "--no-builtin-seeds",
        "low_percentile": "--bucket-percentiles",
        "high_percentile": None,
    }.get(name, "--" + name.replace("_", "-"))


def add_search_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> dict[str, argparse._ArgumentGroup]:
    """One option per SearchContext field (its description is the help), except those in `skip`, in one
    argument group per section of context.py. Returns the groups by section title."""
    groups = {}
    for title, names in sections().items():
        group = groups[title] = p.add_argument_group(title)
        for name in names:
            if name in skip:
                continue
            if name in SPECIAL:
                _add_special(group, name)
            else:
                _add_field(group, next(f for f in dataclasses.fields(SearchContext) if f.name == name))
    return groups


def _add_field(group, f: dataclasses.Field) -> None:
    if str(f.type) in ("bool", "bool | None"):
        default = "" if f.default is None else f" (default: {'on' if f.default else 'off'})"
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{f.metadata['description']}{default}",
        )
        return
    kind = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
    group.add_argument(
        "--" + f.name.replace("_", "-"),
        type=kind,
        default=None,
        choices=f.metadata.get("choices"),
        help=f"{f.metadata['description']} (default: {'none' if f.default is None else f.default})",
        metavar=f.name.upper() if kind is not str or "choices" not in f.metadata else None,
    )


def _add_special(group, name: str) -> None:
    if name == "hint":
        hint = group.add_mutually_exclusive_group()
        hint.add_argument("--hint", metavar="TEXT", help=describe("hint"))
        hint.add_argument("--hint-file", metavar="PATH", help="Read the hint from a text file (instead of --hint).")
    elif name == "seed_prompts":
        group.add_argument("--seed-prompts", metavar="FILE", help="A UTF-8 file of extra seed prompts, one per line, measured first.")
    elif name == "builtin_seeds":
        group.add_argument(
            "--no-builtin-seeds",
            action="store_true",
            help="Skip the built-in seed prompts: the search starts from --seed-prompts, or from the LLM alone.",
        )
    elif name == "low_percentile":
        group.add_argument(
            "--bucket-percentiles",
            metavar="LOW,HIGH",
            help="Percentiles of activations seen so far that bound the low and high buckets (default: 15,85).",
        )


def settings_from(args: argparse.Namespace) -> dict:
    """The SearchContext settings the user gave explicitly."""
    names = {f.name for f in dataclasses.fields(SearchContext)} - SPECIAL
    settings = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if getattr(args, "hint_file", None):
        try:
            if Path(args.hint_file).stat().st_size > MAX_HINT_BYTES:
                raise UserError(
                    f"The hint file {args.hint_file} is over {MAX_HINT_BYTES // 1024} KB: a hint is a few sentences "
                    "put into every LLM request. Shorten it."
                )
            settings["hint"] = Path(args.hint_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"Cannot read the hint file {args.hint_file} ({error}). Give --hint-file a UTF-8 text file.") from None
    if getattr(args, "hint", None) is not None:
        settings["hint"] = args.hint
    if getattr(args, "seed_prompts", None):
        from neuron_search.services.search.seeds import read_seed_file

        settings["seed_prompts"] = read_seed_file(args.seed_prompts)
    if getattr(args, "no_builtin_seeds", False):
        settings["builtin_seeds"] = False
    if getattr(args, "bucket_percentiles", None):
        try:
            low, high = (float(x) for x in args.bucket_percentiles.split(","))
        except ValueError:
            raise UserError(f"--bucket-percentiles takes two numbers as LOW,HIGH (e.g. 15,85), not {args.bucket_percentiles!r}.") from None
        settings["low_percentile"], settings["high_percentile"] = low, high
    return settings

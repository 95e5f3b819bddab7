"""The layers of the README's "How the code is laid out" run one way: a module imports its own folder and the layers below it, never one above.

Every .py file of the project is parsed, not imported, and every import counts: at the top of a file, under
`if TYPE_CHECKING:`, or inside a function, so no import dodges a layer by hiding in a function. (An import
made by importlib from a string is not seen.) A file that no layer names fails too: a new folder is placed
here on purpose.
"""

from __future__ import annotations

import ast
import os
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Top to bottom. Each layer is a list of tiers, top to bottom; a tier is the folders ("x/") and files on it.
# A module may import its own folder (or file) and anything on a lower tier, of its layer or a lower one;
# never a tier above it, nor another folder of its own tier.
LAYERS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("entry points", (
        ("scripts/", "bench/"),  # measure and check the project as a user would
        ("testing/",),  # what tests and benches build: a tiny model, scripted LLM answers
        ("run.py",),  # the command line
        ("cli/",),  # run.py's options
        ("__init__.py",),  # the package: NeuronSearch, imported on first use
        ("api.py", "graph/studio.py"),  # the Python API; LangGraph Studio's graph factory
    )),
    ("runs", (("runs/",),)),  # a run's lifecycle and a sweep's: open, lock, drive the graph, write the results, release
    ("graph", (
        ("graph/",),  # wires the nodes
        ("nodes/",),  # one step each
    )),
    ("domain services", (
        ("services/runtime.py", "services/reports/"),  # the services a run needs, cached; pages and files from data
        ("services/explain/",),  # explanations and their scores
        ("services/evidence/",),  # peak tokens, logit effects: what a neuron does, from records and weights
        ("services/llm/", "services/dataset/"),  # the proposers and structured answers; real text
        ("services/search/",),  # search rules: candidates, themes, findings, seeds, the prompt index
        ("services/model/", "services/sweep/"),  # the subject model and its gradients; --neurons specs
    )),
    ("storage", (("services/storage/",),)),  # files, their names, the SQLite stores: no search rule, no page
    ("core", (
        ("context.py", "state.py"),  # settings and their checks; what flows through the graph
        ("services/errors.py", "services/__init__.py"),  # the one error a user can fix
    )),
)

# Not the project's modules: tests may import any layer; build output, run results and caches are no source.
SKIPPED = {"tests", "build", "results", "__pycache__"}


def places() -> list[tuple[str, int]]:
    """Every folder or file a layer names, with its rank: higher ranks may import lower ones."""
    tiers = [tier for _, layer in LAYERS for tier in layer]
    return [(place, len(tiers) - i) for i, tier in enumerate(tiers) for place in tier]


def place_of(path: str) -> tuple[str, int] | None:
    """The most specific place that holds `path` (graph/studio.py before graph/), with its rank."""
    held = [(place, rank) for place, rank in places() if path == place or (place.endswith("/") and path.startswith(place))]
    return max(held, key=lambda held: len(held[0]), default=None)


def project_files() -> list[str]:
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED and not d.startswith(".") and not d.endswith(".egg-info")]
        found += [(Path(folder) / name).relative_to(ROOT).as_posix() for name in files if name.endswith(".py")]
    return sorted(found)


def module_file(name: str) -> str | None:
    """The project file of module `name` ("neuron_search.services.storage.files"), None for another package's."""
    if name == "neuron_search":
        return "__init__.py"
    if not name.startswith("neuron_search."):
        return None
    base = ROOT.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT).as_posix()
    return None


@cache
def imports(path: str) -> list[tuple[int, str]]:
    """(line, file) of every project module that `path` imports, wherever in the file the import stands."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    package = ["neuron_search", *path.split("/")[:-1]]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package up
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import mod` imports pkg/mod.py; `from mod import name` imports mod itself.
            names = [f"{base}.{alias.name}" if module_file(f"{base}.{alias.name}") else base for alias in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            target = module_file(name)
            if target and target != path:
                found.append((node.lineno, target))
    return found


def test_every_file_has_a_layer():
    assert [path for path in project_files() if place_of(path) is None] == []


def test_no_module_imports_from_a_higher_layer_or_a_neighbour_on_its_tier():
    wrong = []
    for path in project_files():
        source = place_of(path)
        for line, target in imports(path):
            goal = place_of(target)
            if source and goal and goal[0] != source[0] and goal[1] >= source[1]:
                wrong.append(f"{path}:{line} imports {target} ({goal[0]} is not below {source[0]})")
    assert not wrong, "\n".join(wrong)


def test_no_circles():
    """No module reaches itself through imports, even within one folder."""
    graph = {path: sorted({target for _, target in imports(path)}) for path in project_files()}
    circles, state = [], {}

    def visit(path: str, trail: list[str]) -> None:
        state[path] = "open"
        for target in graph.get(path, []):
            if state.get(target) == "open":
                circles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[path] = "done"

    for path in graph:
        if path not in state:
            visit(path, [path])
    assert not circles, "\n".join(circles)

"""The package's architecture as a checked fact: layers that import only downwards, no import cycles.

Every ``import`` statement of every module counts, those inside functions too. A function-level
import is allowed only to keep start-up fast, and must say so in a comment.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "actiontrain"

# Lowest first. A module may import modules of its own layer or below; cycles are checked apart.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("actiontrain", "actiontrain.errors", "actiontrain.seeding")),
    ("configuration and storage", ("actiontrain.storage", "actiontrain.config", "actiontrain.log")),
    (
        "components",
        (
            "actiontrain.recipe",
            "actiontrain.embedded_s3",
            "actiontrain.data",
            "actiontrain.model",
            "actiontrain.distributed",
            "actiontrain.optim",
            "actiontrain.checkpoint",
            "actiontrain.metrics",
            "actiontrain.evaluation",
            "actiontrain.ledger",
            "actiontrain.preemption",
            "actiontrain.launch.rendezvous",
        ),
    ),
    ("model artefacts", ("actiontrain.trained_model", "actiontrain.export", "actiontrain.inference")),
    ("tasks", ("actiontrain.tasks",)),
    ("front ends", ("actiontrain.cli", "actiontrain.launch.components", "actiontrain.__main__", "actiontrain.launch")),
]
# What the command line may import besides tasks: what it prints with, parses with and catches.
CLI_MAY_IMPORT = {
    "actiontrain",
    "actiontrain.errors",
    "actiontrain.log",
    "actiontrain.storage",
    "actiontrain.config",
    "actiontrain.data.layouts",
    "actiontrain.preemption",  # the exit code of a run stopped by SIGTERM
    "actiontrain.tasks",
}
MAX_FUNCTION_LEVEL_IMPORTS = 6


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool
    commented: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    functions = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from actiontrain.data import loader" imports the submodule actiontrain.data.loader.
            targets = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                for alias in node.names
            ]
        else:
            continue
        here = lines[node.lineno - 1]
        above = lines[node.lineno - 2] if node.lineno > 1 else ""
        commented = "#" in here or above.strip().startswith("#")
        for target in targets:
            if target == "actiontrain" or target.startswith("actiontrain."):
                found.append(Import(name, target, node.lineno, id(node) in functions, commented))
            elif id(node) in functions:  # third-party imports inside functions count too
                found.append(Import(name, target, node.lineno, True, commented))
    return found


def _layer(module: str) -> int:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = _modules()
    known = set(modules)
    return [edge for name, path in modules.items() for edge in _imports(name, path, known)]


def _package_edges(graph: list[Import]) -> list[Import]:
    return [edge for edge in graph if edge.target.startswith("actiontrain")]


def test_every_module_belongs_to_a_layer():
    for module in _modules():
        _layer(module)


def test_no_module_imports_from_a_layer_above_its_own(graph):
    upward = [
        f"{edge.source}:{edge.line} imports {edge.target} ({LAYERS[_layer(edge.target)][0]} above "
        f"{LAYERS[_layer(edge.source)][0]})"
        for edge in _package_edges(graph)
        if edge.target != "actiontrain" and _layer(edge.target) > _layer(edge.source)
    ]
    assert not upward, "\n".join(upward)


def test_the_command_line_calls_tasks_only(graph):
    reached = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edge in _package_edges(graph)
        if edge.source.startswith("actiontrain.cli")
        and not edge.target.startswith("actiontrain.cli")
        and edge.target not in CLI_MAY_IMPORT
    ]
    assert not reached, "\n".join(reached)


def test_no_component_imports_a_task_or_a_front_end(graph):
    tasks_layer = _layer("actiontrain.tasks")
    offending = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edge in _package_edges(graph)
        if _layer(edge.source) < tasks_layer and _layer(edge.target) >= tasks_layer
    ]
    assert not offending, "\n".join(offending)


def test_there_is_no_import_cycle(graph):
    modules = set(_modules())
    edges: dict[str, set[str]] = {module: set() for module in modules}
    for edge in _package_edges(graph):
        if edge.target in modules and edge.target != edge.source:
            # A package's __init__ re-exporting its submodules is not a cycle with them.
            if edge.target.startswith(edge.source + ".") and _modules()[edge.source].name == "__init__.py":
                continue
            edges[edge.source].add(edge.target)
    cycle = _find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def test_function_level_imports_are_few_and_each_says_why(graph):
    inside = [edge for edge in graph if edge.in_function]
    listed = "\n".join(f"{edge.source}:{edge.line} {edge.target}" for edge in inside)
    assert len({(edge.source, edge.line) for edge in inside}) <= MAX_FUNCTION_LEVEL_IMPORTS, listed
    silent = [f"{edge.source}:{edge.line} {edge.target}" for edge in inside if not edge.commented]
    assert not silent, "function-level imports without a comment saying why:\n" + "\n".join(silent)


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None

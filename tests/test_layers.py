"""The package's layers point one way (docs/architecture.md), read from the source with ``ast``:

    solvers  <-  schedules  <-  schedulers  <-  features  <-  commands

Every import of a package module counts, also one inside a function (a local import would hide a cycle);
function-local imports are allowed only for optional dependencies, each with a comment saying so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import diffusers_geo

PACKAGE = Path(diffusers_geo.__file__).parent
#: top-level parts of the package by layer; a module may import its own layer and the ones before it
LAYERS = [
    {"solvers", "_help"},  # pure math in (sigma, D); no diffusers
    {"schedules", "parameterization"},  # sigma schedules and the one coordinate change
    {"schedulers", "registry"},  # the diffusers adapters and the one name -> scheduler factory
    {
        "models",
        "priors",
        "diagnostics",
        "gits",
        "sampling",
        "data",
        "evaluation",
        "metrics",
    },  # library features
    {"bench", "testing", "cli", "__main__"},  # the benchmark, the test helpers and the commands
]
#: what the top layer may not import among itself: the benchmark and the test helpers are not commands
FORBIDDEN = {
    ("bench", "cli"),
    ("bench", "testing"),
    ("testing", "cli"),
    ("testing", "bench"),
    ("cli", "testing"),
}
#: optional dependencies (extras), imported where used so that the package imports without them
OPTIONAL = {"matplotlib", "sklearn", "scipy", "tqdm", "threadpoolctl", "torchmetrics"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root (it re-exports)


def _layer(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def _imports(module: str) -> list[tuple[str, bool, ast.stmt]]:
    """``(imported package module or third-party top name, is function-local, node)`` of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def local(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return True
        return False

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, local(node), node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.module, local(node), node))
                continue
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, local(node), node))
    return found


def test_every_part_has_a_layer():
    parts = {_part(m) for m in MODULES} - {None}
    unplaced = {p for p in parts if not any(p in layer for layer in LAYERS)}
    assert not unplaced, f"place {unplaced} in LAYERS (and in docs/architecture.md)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    part = _part(module)
    if part is None:
        return
    for target, _, node in _imports(module):
        if not target.startswith("diffusers_geo") or _part(target) in (None, part):
            continue
        other = _part(target)
        assert _layer(other) <= _layer(part), f"{module}:{node.lineno} imports {target} from a higher layer"
        assert (part, other) not in FORBIDDEN, f"{module}:{node.lineno} imports {target}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_local_imports_only_for_optional_dependencies(module):
    source = MODULES[module].read_text().splitlines()
    for target, is_local, node in _imports(module):
        if not is_local:
            continue
        assert target.split(".")[0] in OPTIONAL, f"{module}:{node.lineno}: import {target} at the top"
        lines = source[node.lineno - 2 : node.end_lineno]
        assert any("#" in line for line in lines), f"{module}:{node.lineno}: say why {target} is local"


def test_no_import_cycle():
    graph = {
        m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES if m != "diffusers_geo"
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target] if target in path else [module, target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The rules above catch a violation (a solver importing a scheduler; a hidden local import)."""
    bad = PACKAGE / "solvers" / "_layer_probe.py"
    bad.write_text("def f():\n    from ..schedulers import base\n    return base\n")
    try:
        MODULES["diffusers_geo.solvers._layer_probe"] = bad
        with pytest.raises(AssertionError, match="higher layer"):
            test_imports_point_down_the_layers("diffusers_geo.solvers._layer_probe")
        with pytest.raises(AssertionError, match="at the top"):
            test_local_imports_only_for_optional_dependencies("diffusers_geo.solvers._layer_probe")
    finally:
        bad.unlink()
        MODULES.pop("diffusers_geo.solvers._layer_probe", None)

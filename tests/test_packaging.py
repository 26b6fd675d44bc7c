"""The distribution's metadata matches the code: every third-party import is declared (in the base install or
the extra that serves it), nothing declared goes unused, the licence and the PEP 561 marker ship, and the sdist
carries every folder of the repository that tests read. Read from the source and pyproject.toml; `.ci/run`
builds the wheel and the sdist and checks the built files themselves."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import metadata, packages_distributions
from pathlib import Path

import diffusers_geo

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(diffusers_geo.__file__).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
#: imported by the package but declared by no extra, with the reason (the user installs it by hand)
UNDECLARED = {"torchmetrics": "FID's Inception features, optional with a fallback (docs/eval.md)"}
#: imported by scripts/ only, which say how to install it (diffusers' conformance suite, ComfyUI parity)
SCRIPT_ONLY = {"torchsde", "comfy"}
#: declared for a command, not imported
TOOLS = {"ruff"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group())


def _declared(*extras: str) -> set[str]:
    """Distribution names of the base install plus the given extras (an extra naming this project's own
    extras, as ``[test]`` names ``[bench]``, brings theirs)."""
    names, todo, seen = {_requirement_name(r) for r in PROJECT["dependencies"]}, list(extras), set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for requirement in PROJECT["optional-dependencies"][extra]:
            name = _requirement_name(requirement)
            if name == _normalise(PROJECT["name"]):
                todo += [e.strip() for e in re.search(r"\[(.*)\]", requirement).group(1).split(",")]
                todo = [e for e in todo if e not in seen]
            else:
                names.add(name)
    return names


def _imports(paths) -> dict[str, bool]:
    """Top-level third-party module -> whether every import of it is inside a function (an optional import)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    local_only: dict[str, bool] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            inside, up = False, node
            while up in parents:
                up = parents[up]
                inside |= isinstance(up, ast.FunctionDef | ast.AsyncFunctionDef)
            for module in modules:
                top = module.split(".")[0]
                if top not in stdlib and top != "diffusers_geo":
                    local_only[top] = local_only.get(top, True) and inside
    return local_only


def _distribution(module: str) -> str:
    """The installed distribution that provides a top-level module (``PIL`` -> ``pillow``)."""
    found = _PROVIDERS.get(module)
    assert found, f"{module} is imported but not installed here: cannot tell which distribution provides it"
    return _normalise(found[0])


_PROVIDERS = packages_distributions()
PACKAGE_IMPORTS = _imports(PACKAGE.rglob("*.py"))


def test_every_import_of_the_package_is_declared():
    """A module-level import needs the base install; a function-local (optional) one the base install or the
    `[bench]` extra, which the commands that need it name."""
    base, bench = _declared(), _declared("bench")
    missing = []
    for module, optional in sorted(PACKAGE_IMPORTS.items()):
        if module in UNDECLARED:
            continue
        distribution = _distribution(module)
        if distribution not in (bench if optional else base):
            missing.append(f"{module} ({distribution}, {'optional' if optional else 'module-level'} import)")
    assert not missing, f"declare in pyproject.toml: {missing}"


def test_every_declared_dependency_is_imported():
    """Nothing is declared that the package does not use (the base install stays lean)."""
    used = {_distribution(m) for m in PACKAGE_IMPORTS if m not in UNDECLARED}
    unused = _declared("bench") - used
    assert not unused, f"declared in pyproject.toml but never imported by diffusers_geo: {sorted(unused)}"


def test_test_extra_covers_what_the_tests_and_examples_import():
    """`pip install -e ".[test]"` is the README's test install: the tests, their helper modules and the
    examples they run need nothing else."""
    helpers = {p.stem for p in (ROOT / "tests").glob("*.py")}
    paths = [*(ROOT / "tests").glob("*.py"), *(ROOT / "examples").glob("*.py")]
    imported = {m for m in _imports(paths) if m not in helpers}
    declared = _declared("test")
    missing = sorted(f"{m} ({_distribution(m)})" for m in imported if _distribution(m) not in declared)
    assert not missing, f"add to the [test] extra: {missing}"
    unused = (
        declared
        - {_distribution(m) for m in imported}
        - {_distribution(m) for m in PACKAGE_IMPORTS if m not in UNDECLARED}
        - TOOLS
    )
    assert not unused, f"in [test] but imported by no test: {sorted(unused)}"


def test_scripts_need_only_the_test_extra_or_say_what_to_install():
    """scripts/ may need more (torchsde, ComfyUI), but only what their docstrings tell the user to get."""
    imported = _imports((ROOT / "scripts").glob("*.py"))
    declared = _declared("test")
    extra = sorted(m for m in imported if m not in SCRIPT_ONLY and _distribution(m) not in declared)
    assert not extra, extra


def test_every_requirement_has_a_lower_bound():
    """`.ci/run` pins every `>=` floor at once in a resolver dry-run: each requirement needs one."""
    requirements = PROJECT["dependencies"] + [
        r for rs in PROJECT["optional-dependencies"].values() for r in rs
    ]
    own = _normalise(PROJECT["name"])
    plain = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*>=[0-9][0-9A-Za-z.]*")
    bad = [r for r in requirements if _requirement_name(r) != own and not plain.fullmatch(r)]
    assert not bad, f"write these as name>=floor: {bad}"


def test_python_floor_is_diffusers_floor_and_matches_classifiers_and_ruff():
    floor = re.fullmatch(r">=(\d+)\.(\d+)", PROJECT["requires-python"])
    assert floor, PROJECT["requires-python"]
    major, minor = int(floor[1]), int(floor[2])
    diffusers_floor = re.match(r">=\s*(\d+)\.(\d+)", metadata("diffusers")["Requires-Python"])
    assert (major, minor) >= (int(diffusers_floor[1]), int(diffusers_floor[2])), (
        "diffusers needs a newer Python"
    )
    versions = sorted(
        tuple(map(int, c.rsplit(" ", 1)[1].split(".")))
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: \d+\.\d+", c)
    )
    assert versions and versions[0] == (major, minor), (versions, PROJECT["requires-python"])
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{major}{minor}"


def test_license_is_in_the_repository_and_declared():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Copyright 2026 the diffusers-geo developers" in text
    assert PROJECT["license"] == "Apache-2.0" and "LICENSE" in PROJECT["license-files"]


def test_py_typed_ships_in_the_wheel():
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["diffusers_geo"]
    assert "Typing :: Typed" in PROJECT["classifiers"]


def test_sdist_carries_every_folder_and_top_level_file_the_repository_has():
    """MANIFEST.in grafts each top-level folder (tests read examples/, scripts/, docs/ and pyproject.toml) and
    includes each top-level file, so that the tests collect and pass from the unpacked sdist."""
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    grafted = {line.split()[1] for line in manifest if line.startswith("graft ")}
    included = {name for line in manifest if line.startswith("include ") for name in line.split()[1:]}
    generated = re.compile(r"\..*|.*\.egg-info|build|dist|.*-out|__pycache__|PKG-INFO|setup\.cfg")
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not generated.fullmatch(p.name)}
    files = {p.name for p in ROOT.iterdir() if p.is_file() and not generated.fullmatch(p.name)}
    assert folders and folders <= grafted, f"graft in MANIFEST.in: {sorted(folders - grafted)}"
    assert files and files <= included, f"include in MANIFEST.in: {sorted(files - included)}"


def test_install_hints_name_an_extra_that_exists():
    """A message telling the user to `pip install "diffusers-geo[x]"` names a real extra."""
    named = {
        (path.name, extra)
        for path in PACKAGE.rglob("*.py")
        for extra in re.findall(r"diffusers-geo\[(\w+)\]", path.read_text())
    }
    assert named, "no install hint found: the digits' scikit-learn message names one"
    wrong = sorted(hint for hint in named if hint[1] not in PROJECT["optional-dependencies"])
    assert not wrong, wrong

"""The docs stay true: every ``diffusers-geo`` command in README.md and docs/*.md parses with the real parser
(and a ``bench`` command's sampler names build), every link to the repository names a file and heading that
exist, no page names a path outside the repository, the Python examples import names that exist, and no
docstring quotes a benchmark number (those live on the docs pages, which go with their commands).

The commands are read from shell code blocks (with line continuations, ``NAME="..."`` variables and ``for``
loops expanded) and from inline code; ``accelerate launch ... -m diffusers_geo.cli`` and ``python -m
diffusers_geo.cli`` count as ``diffusers-geo``. Placeholders (``<hub id or folder>``), ``sd|ddpm``
alternatives, ``[--optional]`` brackets and ``...`` are replaced by a plausible value before parsing; a
command is only parsed, never run.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
#: the project's declared home: README links to repository files by this prefix (they must work on PyPI)
REPO_URL = "https://github.com/diffusers-geo/diffusers-geo/blob/main/"
REPO_TREE_URL = "https://github.com/diffusers-geo/diffusers-geo/tree/main/"

SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}
#: placeholder words (inside ``<...>``) and the value that stands in for them
PLACEHOLDERS = {
    "hub id": "org/model",
    "folder": "my-model",
    "dir": "out",
    "path": "config.json",
    "names": "ddim,euler",
    "file": "prompts.txt",
    "σ": "4",
}


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


# ---------------------------------------------------------------------------------------------------- reading


def _code_blocks(text: str) -> tuple[list[tuple[int, str, list[str]]], str]:
    """The fenced blocks as (first line number, language, lines) and the prose with the blocks blanked out
    (line numbers kept)."""
    blocks, prose, current, start, language = [], [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*```+\s*([\w-]*)", line)
        if fence and current is None:
            current, start, language = [], number + 1, fence.group(1).lower()
            prose.append("")
        elif fence:
            blocks.append((start, language, current))
            current = None
            prose.append("")
        elif current is not None:
            current.append(line)
            prose.append("")
        else:
            prose.append(line)
    return blocks, "\n".join(prose)


def _strip_comment(line: str) -> str:
    """The line without its ``# comment`` (a ``#`` at the start or after a blank, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _shell_commands(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """The simple commands of a shell block as (line number, text): continuations joined, comments dropped,
    ``NAME=value`` variables substituted, a ``for name in a b; do ... done`` body once per value."""
    logical: list[tuple[int, str]] = []
    pending, first = "", 0
    for offset, raw in enumerate(lines):
        line = _strip_comment(raw).rstrip()
        if not pending:
            first = start + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((first, pending + line))
        pending = ""
    if pending:
        logical.append((first, pending))

    variables: dict[str, str] = {}
    loops: list[tuple[str, list[str]]] = []  # the enclosing `for` loops: each body runs once per value
    commands = []
    for number, line in logical:
        for part in re.split(r"\s*(?:&&|\|\||;)\s*|\s+\|\s+", line):
            part = part.strip()
            loop = re.match(r"for\s+(\w+)\s+in\s+(.+)", part)
            assignment = re.fullmatch(r"(\w+)=(\"[^\"]*\"|'[^']*'|\S*)", part)
            if loop:
                loops.append((loop.group(1), loop.group(2).split()))
            elif assignment:
                variables[assignment.group(1)] = assignment.group(2).strip("\"'")
            elif part == "done":
                loops.pop()
            elif part and part not in ("do", "then", "fi"):
                part = re.sub(r"^do\s+", "", part)
                for values in itertools.product(*(v for _, v in loops)):
                    scope = {
                        **variables,
                        **{name: value for (name, _), value in zip(loops, values, strict=True)},
                    }
                    commands.append((number, " ".join(_expand(part, scope).split())))
    return commands


def _expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), text)


def _inline_spans(prose: str) -> list[tuple[int, str]]:
    """Inline code spans as (line number, text); a span may wrap onto the next line of its paragraph."""
    spans = []
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        if "\n\n" not in match.group(1):
            spans.append((prose.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())))
    return spans


def commands_in(path: Path) -> list[Command]:
    """Every ``diffusers-geo`` command line of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    blocks, prose = _code_blocks(text)
    found = []
    for start, language, lines in blocks:
        if language in SHELL_LANGUAGES:
            found += [Command(path, n, c) for n, c in _shell_commands(start, lines) if _is_ours(c)]
    found += [Command(path, n, c) for n, c in _inline_spans(prose) if _is_ours(c)]
    return found


def _is_ours(text: str) -> bool:
    return bool(re.search(r"(^|\s)diffusers-geo\s+[a-z]|-m\s+diffusers_geo\.cli\b", text))


# ---------------------------------------------------------------------------------------------------- argv


def _placeholder(match: re.Match) -> str:
    words = match.group(1)
    for key, value in PLACEHOLDERS.items():
        if key in words:
            return value
    return "x"


def argv_variants(text: str) -> list[list[str]]:
    """The argument lists one documented command stands for (one per ``a|b`` alternative)."""
    text = re.sub(r"<([^<>]+)>", _placeholder, text)
    text = re.sub(r"\[(--[^\[\]]+)\]", r"\1", text)  # `[--sigma-start σ_T]`: the optional part, given
    tokens = shlex.split(text)
    for i, token in enumerate(tokens):
        if token == "diffusers-geo" or (token == "diffusers_geo.cli" and i and tokens[i - 1] == "-m"):
            tokens = tokens[i + 1 :]
            break
    else:
        raise AssertionError(f"no diffusers-geo command in {text!r}")
    # `...`: "the rest as above"; an option followed by it gets a stand-in value
    tokens = [re.sub(r"/\.\.\.$", "", t) for t in tokens]
    argv = []
    for i, token in enumerate(tokens):
        if token == "...":
            if i and tokens[i - 1].startswith("--"):
                argv.append("x")
            continue
        argv.append(token)
    alternatives = max((t.count("|") + 1 for t in argv), default=1)
    return [
        [t.split("|")[min(k, t.count("|"))] if "|" in t else t for t in argv] for k in range(alternatives)
    ]


def _parse(argv: list[str]) -> str | None:
    """None when the real parser accepts ``argv``, else what it printed on refusing it."""
    from diffusers_geo.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return (
                stderr.getvalue().strip().splitlines()[-1]
                if stderr.getvalue().strip()
                else f"exit {exit_.code}"
            )
    return None


ALL_COMMANDS = [command for path in DOCS for command in commands_in(path)]


def test_the_docs_hold_commands_of_every_kind():
    # the reader is not silently finding nothing: code blocks, loops with variables, inline code, accelerate
    texts = " ".join(c.text for c in ALL_COMMANDS)
    assert len(ALL_COMMANDS) > 50
    assert "diffusers-geo bench --nfe 5,8,12" in texts  # `$B ...` inside a `for` loop, expanded
    assert "-m diffusers_geo.cli" in texts
    assert {c.path.name for c in ALL_COMMANDS} >= {"README.md", "benchmark.md", "eval.md", "gits.md"}


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=Command.where)
def test_documented_command_parses(command):
    for argv in argv_variants(command.text):
        if len(argv) == 1:  # `diffusers-geo gits` names the command in prose: it must exist
            argv = [*argv, "--help"]
        error = _parse(argv)
        assert error is None, f"{command.where()}: `{command.text}` does not parse ({error}); argv {argv}"


def test_a_broken_command_is_reported_with_its_file_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        'Intro.\n\n```bash\nB="diffusers-geo bench --nfe 5"\nfor c in sd ddpm; do\n'
        "  $B --config $c \\\n    --no-such-option\ndone\n```\n\nInline `diffusers-geo eval --threads 1`.\n",
        encoding="utf-8",
    )
    found = [(c.line, c.text) for c in commands_in(page)]
    assert found == [
        (6, "diffusers-geo bench --nfe 5 --config sd --no-such-option"),
        (6, "diffusers-geo bench --nfe 5 --config ddpm --no-such-option"),
        (11, "diffusers-geo eval --threads 1"),
    ]
    broken, _, fine = (argv_variants(text)[0] for _, text in found)
    assert "--no-such-option" in _parse(broken)
    assert _parse(fine) is None


def test_placeholders_alternatives_and_accelerate_are_understood():
    assert argv_variants("diffusers-geo bench --config sd3|flux --problem all") == [
        ["bench", "--config", "sd3", "--problem", "all"],
        ["bench", "--config", "flux", "--problem", "all"],
    ]
    assert argv_variants(
        "accelerate launch --num_processes 4 -m diffusers_geo.cli gits --model <hub id or folder>"
    ) == [["gits", "--model", "org/model"]]
    assert argv_variants("diffusers-geo eval ... --nfe 4,5 --resume") == [
        ["eval", "--nfe", "4,5", "--resume"]
    ]


# ---------------------------------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def links_in(path: Path) -> list[tuple[int, str]]:
    """Markdown links outside code as (line number, target)."""
    _, prose = _code_blocks(path.read_text(encoding="utf-8"))
    prose = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group(0)), prose)
    return [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(prose)]


def _repo_path(path: Path, target: str) -> Path | None:
    """The repository file a link names, or None for an external link or a pure anchor."""
    target = unquote(target.split("#", 1)[0])
    for prefix in (REPO_URL, REPO_TREE_URL):
        if target.startswith(prefix):
            return ROOT / target[len(prefix) :]
    if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):
        return None
    return (path.parent / target).resolve()


ALL_LINKS = [(path, line, target) for path in DOCS for line, target in links_in(path)]


@pytest.mark.parametrize("path,line,target", ALL_LINKS, ids=[f"{p.name}:{n}" for p, n, _ in ALL_LINKS])
def test_link_points_to_a_file_of_the_repository(path, line, target):
    where = f"{path.relative_to(ROOT)}:{line}"
    resolved = _repo_path(path, target)
    if resolved is None:
        return
    assert resolved.is_relative_to(ROOT), f"{where}: {target} points outside the repository"
    assert resolved.exists(), f"{where}: {target} names {resolved.relative_to(ROOT)}, which does not exist"


def test_no_page_names_a_path_outside_the_repository():
    # a `../` path in a link or in inline code that climbs out of the clone is dead for every reader
    outside = []
    for path in DOCS:
        _, prose = _code_blocks(path.read_text(encoding="utf-8"))
        for match in re.finditer(r"(?:\.\./)+[\w./-]*", prose):
            if not (path.parent / match.group(0)).resolve().is_relative_to(ROOT):
                outside.append(
                    f"{path.relative_to(ROOT)}:{prose.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
                )
    assert not outside, outside


def test_readme_links_to_repository_files_are_absolute():
    # the README is the package index's front page, where a relative `docs/...` link is dead
    relative = [
        (n, t)
        for n, t in links_in(ROOT / "README.md")
        if _repo_path(ROOT / "README.md", t) and "://" not in t
    ]
    assert not relative, f"README.md links by relative path (use {REPO_URL}<path>): {relative}"


def _subcommand(command: Command) -> str | None:
    try:
        return argv_variants(command.text)[0][0]
    except (
        ValueError,
        IndexError,
        AssertionError,
    ):  # unbalanced quotes and the like: the parse test reports it
        return None


BENCH_COMMANDS = [c for c in ALL_COMMANDS if _subcommand(c) == "bench"]


@pytest.mark.parametrize("command", BENCH_COMMANDS, ids=Command.where)
def test_documented_bench_schedulers_exist_with_their_options(command):
    # parsing accepts any --schedulers text; a renamed option (`er-sde:noise=...`) or sampler would only fail
    # when run, so each name is built here for the command's --config, as bench builds it
    from diffusers_geo.bench.problems import CONFIGS, load_config
    from diffusers_geo.cli import build_parser
    from diffusers_geo.registry import make_scheduler, resolve_names

    for argv in argv_variants(command.text):
        args = build_parser().parse_args(argv)
        if args.list or args.config not in CONFIGS:  # `--list`, or a `<path>` placeholder
            continue
        config = load_config(args.config, args.prediction)
        flow = config["prediction_type"] == "flow_prediction"
        parts = ["flow-all" if flow and p.strip() == "all" else p.strip() for p in args.schedulers.split(",")]
        for name in resolve_names(",".join(p for p in parts if p != "...")):  # `a,b,...`: and more
            try:
                make_scheduler(name, config)
            except (ValueError, TypeError) as err:
                raise AssertionError(
                    f"{command.where()}: {name!r} with --config {args.config}: {err}"
                ) from err


# ---------------------------------------------------------------------------------------------------- docstrings

#: how a benchmark result reads in prose: "0.74x the best", "2.1× lower", "9 % more error", "FD 0.45", "90 s
#: instead of"; equations (``1 - sigma_next / sigma``), defaults (``coeff=1.2``) and sizes (8×8) do not match
BENCHMARK_NUMBER = re.compile(
    r"\b\d+(?:\.\d+)?(?:\s?[-–]\s?\d+(?:\.\d+)?)?\s?[x×]\s+(?:the|lower|higher|better|worse|faster|slower|over|"
    r"less|more|of)\b"
    r"|\b\d+(?:\.\d+)?\s?%\s+(?:more|less|lower|higher|worse|better|error|faster|slower)\b"
    r"|\b(?:FD|RMSE|FID)\s+(?:of\s+)?\d+\.\d+"
    r"|\b\d+(?:\.\d+)?\s?s\s+instead\s+of\b",
    re.IGNORECASE,
)


def _docstrings_and_attribute_comments(path: Path) -> list[tuple[int, str]]:
    import ast

    source = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
            ):
                if isinstance(body[0].value.value, str):
                    found.append((body[0].lineno, body[0].value.value))
    found += [(n, line) for n, line in enumerate(source.splitlines(), 1) if line.strip().startswith("#:")]
    return found


def test_docstrings_quote_no_benchmark_numbers():
    # a measured number in a docstring goes stale the day a default moves: it belongs on a docs/ page
    quoted = []
    for path in sorted((ROOT / "diffusers_geo").rglob("*.py")):
        for line, text in _docstrings_and_attribute_comments(path):
            quoted += [
                f"{path.relative_to(ROOT)}:{line}: {m.group(0)!r}" for m in BENCHMARK_NUMBER.finditer(text)
            ]
    assert not quoted, "link to the docs page that holds the number instead: " + "; ".join(quoted)


def test_the_benchmark_number_pattern_is_not_blind():
    hits = [
        "0.39-0.48x the best deterministic built-in",
        "2.1× lower ODE error",
        "9-24 % more ODE error",
        "FD 0.45",
        "90 s instead of 2 s",
    ]
    misses = ["``1 - sigma_next / sigma``", "coeff=1.2", "8×8 digits", "within 2%", "NFE 5-10", "0.01^2"]
    assert all(BENCHMARK_NUMBER.search(text) for text in hits)
    assert not [text for text in misses if BENCHMARK_NUMBER.search(text)]


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub gives a page: lower case, inline markup dropped, punctuation but ``-`` and
    ``_`` removed, blanks to ``-``, a repeated anchor suffixed ``-1``, ``-2``, ..."""
    blocks_removed = _code_blocks(path.read_text(encoding="utf-8"))[1]
    anchors: set[str] = set()
    repeats: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", blocks_removed, flags=re.MULTILINE):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
        slug = re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))
        if slug in anchors:
            repeats[slug] = repeats.get(slug, 0) + 1
            slug = f"{slug}-{repeats[slug]}"
        anchors.add(slug)
    return anchors


ANCHORED = [
    (p, n, t) for p, n, t in ALL_LINKS if "#" in t and _repo_path(p, t) and _repo_path(p, t).suffix == ".md"
]


@pytest.mark.parametrize("path,line,target", ANCHORED, ids=[f"{p.name}:{n}" for p, n, _ in ANCHORED])
def test_link_anchor_names_a_heading(path, line, target):
    page, anchor = _repo_path(path, target), target.split("#", 1)[1]
    assert anchor in _anchors(page), f"{path.relative_to(ROOT)}:{line}: no heading #{anchor} in {page.name}"


def test_anchors_follow_github():
    page = ROOT / "docs" / "eval.md"
    assert "on-a-larger-trained-network-15-m-parameters" in _anchors(page)
    assert "diffusers-geo-eval-which-sampler-and-how-many-steps-for-your-model" in _anchors(page)


def _python_imports() -> list[tuple[str, str, list[str]]]:
    """``from diffusers_geo... import a, b`` lines of the pages' Python blocks as (where, module, names)."""
    found = []
    for path in DOCS:
        blocks, _ = _code_blocks(path.read_text(encoding="utf-8"))
        for start, language, lines in blocks:
            if language not in ("python", "py"):
                continue
            for offset, line in enumerate(lines):
                match = re.match(r"\s*from\s+(diffusers_geo[\w.]*)\s+import\s+([\w\s,]+?)\s*(?:#.*)?$", line)
                if match:
                    names = [n.strip() for n in match.group(2).split(",") if n.strip()]
                    found.append((f"{path.relative_to(ROOT)}:{start + offset}", match.group(1), names))
    return found


def test_python_examples_import_names_that_exist():
    import importlib

    imports = _python_imports()
    assert imports
    missing = []
    for where, module, names in imports:
        loaded = importlib.import_module(module)
        missing += [f"{where}: {module}.{n}" for n in names if not hasattr(loaded, n)]
    assert not missing, missing

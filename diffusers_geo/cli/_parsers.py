"""Every command's options, with argparse and the standard library only: ``diffusers-geo --help`` (and each
command's) imports no torch, diffusers, accelerate, transformers or matplotlib.

The ``type=`` functions refuse a bad value while the command line is read, naming the flag, the value and
the fix (``--steps must be >= 1, got '0' (pass a positive integer)``); :class:`Parser` prints any such error
as one line and exits with status 2. The checks that need torch or the registry live in ``_checks.py``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__

#: ``diffusers-geo demo``'s default samplers and its ``main`` group (diffusers' main built-ins)
DEMO_SCHEDULERS = "ours,main"
DEMO_NFE = (5, 10, 20)
MAIN_BUILTINS: tuple[str, ...] = ("ddim", "ddpm", "euler", "euler-a", "heun", "dpmpp-2m", "unipc")
#: the same for flow-matching pipelines (SD3, Flux): diffusers' flow samplers
MAIN_FLOW_BUILTINS: tuple[str, ...] = ("flow-euler", "flow-euler-sde", "flow-dpmpp-2m", "flow-unipc")
#: ``diffusers_geo.evaluation``'s defaults, written out so that ``--help`` imports no model code
#: (``tests/test_cli_errors.py`` checks that they agree)
EVAL_SCHEDULERS = "ours,dpmpp-2m,unipc,euler"
EVAL_NFE = (4, 5, 6, 8, 10, 15, 20)
EVAL_REFERENCE = "dpmpp-2m-karras:100"
CLIP_MODEL = "openai/clip-vit-base-patch16"
#: ``diffusers_geo.bench.PROBLEMS`` and ``bench.problems.CONFIGS``, by name (checked to agree, as above)
BENCH_PROBLEMS = ("mixture", "images", "manifold")
BENCH_CONFIGS = ("sd", "ddpm", "sd3", "flux")


class UsageError(SystemExit):
    """A user error: exit status 2 once the one-line message is printed; ``str()`` is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = " ".join(message.split())

    def __str__(self) -> str:
        return self.message


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` as one line on stderr and exit with status 2."""
    error = UsageError(message)
    print(f"{prog}: error: {error}", file=sys.stderr)
    raise error


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (``diffusers-geo gits: error: --coeff must be > 0, got '-1'``)
    instead of the usage block and the error; the usage stays one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        # "argument --steps: must be ..." -> "--steps must be ..."
        message = re.sub(r"^argument ([^:]+): ", lambda m: m.group(1).split("/")[-1] + " ", message)
        fail(self.prog, f"{message} (see {self.prog} --help)" if "--help" not in message else message)


# --------------------------------------------------------------------------------------------------
# value types: each names what it wants; argparse adds the flag
# --------------------------------------------------------------------------------------------------
def count(minimum: int = 1) -> Callable[[str], int]:
    """An integer at least ``minimum`` (1: a count; 0: a seed)."""
    fix = {0: "pass a non-negative integer", 1: "pass a positive integer"}.get(
        minimum, f"pass an integer >= {minimum}"
    )

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r} ({fix})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r} ({fix})")
        return value

    parse.__name__ = "integer"
    return parse


def real(minimum: float | None = None, strict: bool = True) -> Callable[[str], float]:
    """A finite float, above ``minimum`` (at least, with ``strict=False``) when one is given."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None and (value <= minimum if strict else value < minimum):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            fix = "a positive number" if strict and minimum == 0 else f"a number {bound}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r} (pass {fix})")
        return value

    parse.__name__ = "number"
    return parse


def int_list(minimum: int) -> Callable[[str], list[int]]:
    """Comma-separated integers, each at least ``minimum``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers, got {text!r} (e.g. 5,10,20)"
            ) from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"expected integers >= {minimum}, got {text!r} (e.g. 5,10,20)")
        return values

    parse.__name__ = "list"
    return parse


POSITIVE = count(1)
SEED = count(0)
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def _add_command(subparsers: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, **kwargs)
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error"
    )
    return parser


# --------------------------------------------------------------------------------------------------
# the commands
# --------------------------------------------------------------------------------------------------
def add_bench(subparsers: Any) -> argparse.ArgumentParser:
    bench = _add_command(
        subparsers,
        "bench",
        help="quality vs NFE on the exact denoiser of a digits Gaussian mixture, or --overhead",
        description="Compare samplers on common noise with the exact optimal denoiser; prints Markdown "
        "tables and writes results.json and a PNG plot to --out.",
    )
    bench.add_argument(
        "--schedulers",
        default="all",
        help="comma-separated names ('all', 'ours', 'builtins', 'flow-builtins', 'flow-all' or names from "
        "--list); config overrides after colons, e.g. 'er-sde:solver_order=2:use_karras_sigmas=True'. 'all' "
        "on a flow config (sd3, flux) means ours and diffusers' flow samplers",
    )
    bench.add_argument(
        "--nfe", type=int_list(1), default=[5, 6, 8, 10, 15, 20], help="target NFEs, e.g. 5,10,20"
    )
    bench.add_argument(
        "--config",
        default="sd",
        help=f"{', '.join(map(repr, BENCH_CONFIGS))} (sd3, flux: flow matching) or a scheduler_config.json path",
    )
    bench.add_argument(
        "--problem",
        default="mixture",
        help=f"comma-separated exact-denoiser problems from {list(BENCH_PROBLEMS)}, or 'all' (the suite)",
    )
    bench.add_argument("--prediction", default="epsilon", choices=["epsilon", "v_prediction", "sample"])
    bench.add_argument("--seeds", type=POSITIVE, default=3, help="number of seeds (the noise band)")
    bench.add_argument("--samples", type=count(2), default=512, help="samples per seed")
    bench.add_argument("--size", type=count(2), default=16, help="image side of the digits mixture")
    bench.add_argument(
        "--out", type=Path, default=Path("bench-out"), help="folder for results.json and plots"
    )
    bench.add_argument(
        "--overhead", action="store_true", help="time scheduler.step instead (ratio to DPM++ 2M)"
    )
    bench.add_argument("--device", default="cpu", help="device for --overhead")
    bench.add_argument(
        "--threads", type=POSITIVE, default=None, help="torch CPU threads (default: torch's choice)"
    )
    bench.add_argument(
        "--prior",
        default="none",
        choices=["none", "gaussian", "gmm"],
        help="start from a prior fitted to the data (issue 7) instead of N(0, I) noise",
    )
    bench.add_argument(
        "--sigma-start", type=real(0), default=None, help="truncate every schedule to start at this sigma_T"
    )
    bench.add_argument("--list", action="store_true", help="list sampler names and exit")
    bench.add_argument("--no-progress", action="store_true")
    return bench


def add_generate(subparsers: Any) -> argparse.ArgumentParser:
    parser = _add_command(
        subparsers,
        "generate",
        help="write N images with a diffusers-geo scheduler (multi-GPU / multi-machine with accelerate launch)",
        description="diffusers-geo generate: N images for an evaluation set, split over processes with "
        "Accelerate (image i uses seed + i).",
    )
    parser.add_argument("--model", default=None, help="hub id or local folder (default: the packaged model)")
    parser.add_argument("--scheduler", default="er-sde", help="a sampler name as in `bench --list`")
    parser.add_argument("--steps", type=POSITIVE, default=20)
    parser.add_argument("--num-images", type=POSITIVE, default=16)
    parser.add_argument("--batch-size", type=POSITIVE, default=8, help="images per pipeline call per process")
    parser.add_argument("--prompt", default=None, help="for text-to-image pipelines")
    parser.add_argument("--seed", type=SEED, default=0, help="image i uses seed + i")
    parser.add_argument("--out", type=Path, default=Path("generate-out"))
    return parser


def add_gits(subparsers: Any) -> argparse.ArgumentParser:
    parser = _add_command(
        subparsers,
        "gits",
        help="search a GITS time schedule for a pipeline (multi-GPU / multi-machine with accelerate launch)",
        description="diffusers-geo gits: search a GITS schedule for a pipeline, split over processes with "
        "Accelerate; writes --out as a scheduler folder.",
    )
    parser.add_argument("--model", default=None, help="hub id or local folder (default: the packaged model)")
    parser.add_argument("--steps", type=POSITIVE, required=True, help="N, the model calls of the schedule")
    parser.add_argument("--num-warmup", type=POSITIVE, default=256, help="warm-up samples (GITS: 256)")
    parser.add_argument(
        "--teacher-steps", type=count(2), default=60, help="model calls per teacher run (GITS: 60)"
    )
    parser.add_argument(
        "--coeff", type=real(0), default=1.2, help="DP weight of later steps (1.15 pixel, 1.2 SD)"
    )
    parser.add_argument("--metric", default="l2", choices=["l2", "dev"])
    parser.add_argument(
        "--jump",
        default="euler",
        choices=["euler", "heun"],
        help="jump whose error the DP weighs (heun: 2nd order)",
    )
    parser.add_argument("--grid", default="timesteps", choices=["timesteps", "karras"])
    parser.add_argument("--analytic-first-step", action="store_true", help="AFS: a free first step")
    parser.add_argument("--prompt", default=None, help="for text-to-image pipelines")
    parser.add_argument(
        "--guidance-scale", type=real(0, strict=False), default=None, help="for text-to-image pipelines"
    )
    parser.add_argument("--seed", type=SEED, default=0, help="warm-up sample i uses seed + i")
    parser.add_argument(
        "--batch-size", type=POSITIVE, default=16, help="warm-up samples per model call per process"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="save this sampler's config (a name as in `bench --list`, e.g. dpmpp-2m) instead of the pipeline's",
    )
    parser.add_argument("--out", type=Path, default=Path("gits-out"), help="the scheduler folder to write")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def add_demo(subparsers: Any) -> argparse.ArgumentParser:
    demo = _add_command(
        subparsers,
        "demo",
        help="sample with every scheduler on the same seeds at NFE 5/10/20; one labelled PNG grid",
        description="By default it loads the packaged digits model (offline, CPU, seconds), samples with every "
        "diffusers_geo scheduler and diffusers' main built-ins at NFE 5, 10 and 20, and writes demo.png (rows: "
        "samplers, columns: NFE, each cell the same seeds) and demo.json. --model <hub id or folder> does the "
        "same with any pipeline (Stable Diffusion with --prompt, ...), on a GPU when there is one.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for demo.png and demo.json")
    demo.add_argument(
        "--schedulers",
        default=DEMO_SCHEDULERS,
        help="comma-separated: 'ours' (every diffusers_geo scheduler), 'main' "
        f"({', '.join(MAIN_BUILTINS)}), 'builtins', or names from `diffusers-geo bench --list`, with "
        "config overrides after colons (er-sde:solver_order=2)",
    )
    demo.add_argument("--nfe", type=int_list(1), default=list(DEMO_NFE), help="model calls, e.g. 5,10,20")
    demo.add_argument("--seeds", type=int_list(0), default=None, help="one image per seed, e.g. 0,1,2,3")
    demo.add_argument("--num-images", type=POSITIVE, default=8, help="seeds 0..N-1 when --seeds is not given")
    demo.add_argument(
        "--model",
        default=None,
        help="hub id or local folder of any diffusers pipeline (default: the packaged digits DDPM)",
    )
    demo.add_argument(
        "--prompt", default=None, help="for text-to-image models (default: an astronaut riding a horse)"
    )
    demo.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', ...")
    demo.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: float16 on GPU")
    demo.add_argument(
        "--threads", type=POSITIVE, default=None, help="torch CPU threads (default: 1 for the packaged model)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    return demo


def add_analyze(subparsers: Any) -> argparse.ArgumentParser:
    parser = _add_command(
        subparsers,
        "analyze",
        help="trajectory geometry (paper A): chord deviation, denoising-trajectory convergence, plots",
        description="Record sampling and denoising trajectories on exact denoisers (Gaussian, digits "
        "mixture, mean shift over the digits) and on a pipeline; print a Markdown table and write "
        "results.json and PNG plots to --out.",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="'default' (the embedded model), 'none' (exact denoisers only), or a hub id / local path",
    )
    parser.add_argument("--scheduler", default="sigma-ddim", help="a sampler name as in `bench --list`")
    parser.add_argument("--steps", type=count(2), default=50, help="sampling steps")
    parser.add_argument("--samples", type=POSITIVE, default=16, help="trajectories per problem")
    parser.add_argument("--eps", type=real(0), default=0.05, help="convergence threshold, RMS in data units")
    parser.add_argument("--size", type=count(2), default=16, help="image side of the exact digits problems")
    parser.add_argument("--prompt", default=None, help="prompt for text-to-image --model pipelines")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default=None, help="device for the pipeline (default: cuda if available)")
    parser.add_argument("--threads", type=POSITIVE, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("analyze-out"), help="folder for results and plots")
    return parser


def add_eval(subparsers: Any) -> argparse.ArgumentParser:
    parser = _add_command(
        subparsers,
        "eval",
        help="which sampler and how many steps for your model and prompts (scored against a converged run)",
        description="Every scheduler at every NFE budget, from the same per-image noise as a converged "
        "reference run; writes eval.json, eval.md, quality_vs_nfe.png, quality_vs_seconds.png and grid.png "
        "to --out. Runs on the packaged model without --model; splits the images over processes under "
        "accelerate launch like generate; --resume reuses the finished cells of an earlier eval.json.",
    )
    parser.add_argument(
        "--model", default=None, help="hub id or pipeline folder (default: the packaged model)"
    )
    parser.add_argument("--prompts", type=Path, default=None, help="text file, one prompt per line")
    parser.add_argument("--schedulers", default=EVAL_SCHEDULERS, help="names as in `bench --list`, or groups")
    parser.add_argument("--nfe", type=int_list(1), default=list(EVAL_NFE), help="model-call budgets")
    parser.add_argument("--reference", default=EVAL_REFERENCE, help="NAME:STEPS, the converged run")
    parser.add_argument("--num-images", type=POSITIVE, default=64)
    parser.add_argument(
        "--batch-size", type=POSITIVE, default=16, help="images per pipeline call per process"
    )
    parser.add_argument("--seed", type=SEED, default=0, help="image i uses seed + i")
    parser.add_argument("--device", default=None, help="default: this process's device (cuda if available)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: float16 on GPU")
    parser.add_argument("--threads", type=POSITIVE, default=None, help="torch CPU threads")
    parser.add_argument(
        "--clip-model",
        default=CLIP_MODEL,
        help="CLIP model (hub id or folder) of the per-image CLIP score against the prompts; 'none': skip it",
    )
    parser.add_argument("--resume", action="store_true", help="reuse the finished cells of --out/eval.json")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("eval-out"))
    return parser


#: the commands, in the order ``--help`` lists them, each with the function that declares its options
COMMANDS: dict[str, Callable[[Any], argparse.ArgumentParser]] = {
    "bench": add_bench,
    "generate": add_generate,
    "gits": add_gits,
    "demo": add_demo,
    "analyze": add_analyze,
    "eval": add_eval,
}


def build_parser(description: str) -> argparse.ArgumentParser:
    """The ``diffusers-geo`` parser: ``--version``, the global ``--debug`` (before or after the command) and
    one subparser per command."""
    parser = Parser(prog="diffusers-geo", description=description)
    parser.add_argument("--version", action="version", version=f"diffusers-geo {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (any position)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in COMMANDS.values():
        add(subparsers)
    return parser

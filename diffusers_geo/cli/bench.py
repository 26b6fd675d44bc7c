"""``diffusers-geo bench``: quality vs NFE on the exact denoiser of a digits Gaussian mixture, or the step
overhead (``--overhead``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..bench import PROBLEMS, load_config, make_problem, run_overhead, run_quality
from ..bench.overhead import overhead_table
from ..bench.quality import floors, to_json
from ..bench.report import markdown_table, plot
from ..bench.start import make_start
from ..priors import truncated_schedule
from ..registry import all_names, make_scheduler, serves_flow
from ..registry import resolve_names as resolve
from ..sampling import dynamic_shift
from ._common import int_list
from ._common import settings as command_settings


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    bench = subparsers.add_parser(
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
        help="'sd', 'ddpm', 'sd3', 'flux' (flow matching) or a scheduler_config.json path",
    )
    bench.add_argument(
        "--problem",
        default="mixture",
        help=f"comma-separated exact-denoiser problems from {list(PROBLEMS)}, or 'all' (the suite)",
    )
    bench.add_argument("--prediction", default="epsilon", choices=["epsilon", "v_prediction", "sample"])
    bench.add_argument("--seeds", type=int, default=3, help="number of seeds (the noise band)")
    bench.add_argument("--samples", type=int, default=512, help="samples per seed")
    bench.add_argument("--size", type=int, default=16, help="image side of the digits mixture")
    bench.add_argument(
        "--out", type=Path, default=Path("bench-out"), help="folder for results.json and plots"
    )
    bench.add_argument(
        "--overhead", action="store_true", help="time scheduler.step instead (ratio to DPM++ 2M)"
    )
    bench.add_argument("--device", default="cpu", help="device for --overhead")
    bench.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    bench.add_argument(
        "--prior",
        default="none",
        choices=["none", "gaussian", "gmm"],
        help="start from a prior fitted to the data (issue 7) instead of N(0, I) noise",
    )
    bench.add_argument(
        "--sigma-start", type=float, default=None, help="truncate every schedule to start at this sigma_T"
    )
    bench.add_argument("--list", action="store_true", help="list sampler names and exit")
    bench.add_argument("--no-progress", action="store_true")
    return bench


def resolve_names(text: str) -> list[str]:
    try:
        return resolve(text)
    except ValueError as err:
        raise SystemExit(f"diffusers-geo bench: {err}") from err


def run(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(all_names()))
        return 0
    if args.seeds < 1 or args.samples < 2:
        raise SystemExit("diffusers-geo bench: --seeds must be >= 1 and --samples >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = load_config(args.config, args.prediction)
    except ValueError as err:
        raise SystemExit(f"diffusers-geo bench: {err}") from err
    flow = serves_flow(config)
    parts = [p.strip() for p in args.schedulers.split(",")]
    names = resolve_names(",".join("flow-all" if flow and p == "all" else p for p in parts))
    if flow and args.prior != "none" and args.sigma_start is None:
        raise SystemExit(
            f"diffusers-geo bench: --prior {args.prior} on the flow-matching config {args.config!r} needs "
            "--sigma-start: its runs start from pure noise at s = 1, where the prior is exact; a fitted prior "
            "starts a truncated schedule at a finite sigma_T."
        )
    if "all" in parts and config.get("use_dynamic_shifting"):
        # FlowMatchHeun takes neither sigmas nor mu: FluxPipeline cannot run it (asked for by name, it errs)
        names = [n for n in names if n != "flow-heun"]
    if args.sigma_start is not None:
        names = _truncatable(names, parts, config, args.sigma_start)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = command_settings(args)
    settings["schedulers"] = names
    command = "diffusers-geo " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("diffusers-geo") else None

    if args.overhead:
        rows = run_overhead(names, config, device=args.device)
        print(overhead_table(rows))
        (args.out / "overhead.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
        return 0

    problems = (
        list(PROBLEMS) if args.problem == "all" else [p.strip() for p in args.problem.split(",") if p.strip()]
    )
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown or not problems:
        raise SystemExit(
            f"diffusers-geo bench: unknown --problem {unknown or args.problem!r}; choose from {list(PROBLEMS)}"
        )
    seeds = list(range(args.seeds))
    print(f"# diffusers-geo bench (config={args.config}, problems {', '.join(problems)})")
    if command:
        print(f"\n`{command}`")
    for problem in problems:
        out = args.out if len(problems) == 1 else args.out / problem
        out.mkdir(parents=True, exist_ok=True)
        model = make_problem(problem, config, size=args.size)
        try:
            start = make_start(model, args.prior, args.sigma_start, config=config)
        except ValueError as err:
            raise SystemExit(f"diffusers-geo bench: {err}") from err
        runs, summaries = run_quality(
            model, config, names, args.nfe, seeds, args.samples, progress=not args.no_progress, start=start
        )
        summaries += floors(model, config, seeds, args.samples) + start.floors(model, seeds, args.samples)
        title = (
            f"problem={problem} config={args.config} prediction={config['prediction_type']} d={model.dim} "
        )
        title += f"samples={args.samples} seeds={args.seeds}" + (
            "" if start.is_default else f" {start.label}"
        )
        print(f"\n## {title}")
        for metric in ("rmse", "fd", "mode_error"):
            print("\n" + markdown_table(summaries, metric, args.nfe))
        (out / "results.json").write_text(
            json.dumps(to_json(runs, summaries, {**settings, "problem": problem}), indent=1)
        )
        plot(summaries, out / "quality_vs_nfe.png", title)
        print(f"\nwrote {out / 'results.json'} and {out / 'quality_vs_nfe.png'}")
    return 0


def _truncatable(names: list[str], parts: list[str], config: dict, sigma_start: float) -> list[str]:
    """The samplers whose schedule can start at ``sigma_start`` (checked before any sampling): one asked for by
    name that cannot is an error; one that came with a group ("all", "builtins") is left out with a note."""
    mu = dynamic_shift(config)
    kept, dropped = [], []
    for name in names:
        try:
            truncated_schedule(make_scheduler(name, config), 5, sigma_start, mu)
        except ValueError as err:
            if name in parts:
                raise SystemExit(
                    f"diffusers-geo bench: --sigma-start {sigma_start:g} with {name}: {err}"
                ) from err
            dropped.append(name)
        else:
            kept.append(name)
    if dropped:
        print(
            f"note: --sigma-start leaves out {', '.join(dropped)} (their schedules cannot start at sigma_T)"
        )
    return kept

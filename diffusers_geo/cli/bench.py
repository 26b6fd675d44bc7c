"""``diffusers-geo bench``: quality vs NFE on the exact denoiser of a digits Gaussian mixture, or the step
overhead (``--overhead``)."""

from __future__ import annotations

import argparse
import json
import sys

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
from ._common import settings as command_settings


def run(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(all_names()))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.prediction)
    flow = serves_flow(config)
    parts = [p.strip() for p in args.schedulers.split(",")]
    names = resolve(",".join("flow-all" if flow and p == "all" else p for p in parts))
    if flow and args.prior != "none" and args.sigma_start is None:
        raise ValueError(
            f"--prior {args.prior} on the flow-matching config {args.config!r} needs "
            "--sigma-start: its runs start from pure noise at s = 1, where the prior is exact; a fitted prior "
            "starts a truncated schedule at a finite sigma_T."
        )
    if "all" in parts and config.get("use_dynamic_shifting"):
        # FlowMatchHeun takes neither sigmas nor mu: FluxPipeline cannot run it (asked for by name, it errs)
        names = [n for n in names if n != "flow-heun"]
    for name in names:  # every option value, against this config, before anything is written
        try:
            make_scheduler(name, config)
        except (ValueError, TypeError) as err:
            raise ValueError(f"--schedulers {name!r} on --config {args.config}: {err}") from None
    if args.sigma_start is not None:
        names = _truncatable(names, parts, config, args.sigma_start)
    problems = (
        list(PROBLEMS) if args.problem == "all" else [p.strip() for p in args.problem.split(",") if p.strip()]
    )
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown or not problems:
        raise ValueError(f"unknown --problem {unknown or args.problem!r}; choose from {list(PROBLEMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = command_settings(args)
    settings["schedulers"] = names
    command = "diffusers-geo " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("diffusers-geo") else None

    if args.overhead:
        rows = run_overhead(names, config, device=args.device)
        print(overhead_table(rows))
        (args.out / "overhead.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
        return 0

    seeds = list(range(args.seeds))
    print(f"# diffusers-geo bench (config={args.config}, problems {', '.join(problems)})")
    if command:
        print(f"\n`{command}`")
    for problem in problems:
        out = args.out if len(problems) == 1 else args.out / problem
        out.mkdir(parents=True, exist_ok=True)
        model = make_problem(problem, config, size=args.size)
        start = make_start(model, args.prior, args.sigma_start, config=config)
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
                raise ValueError(f"--sigma-start {sigma_start:g} with {name}: {err}") from err
            dropped.append(name)
        else:
            kept.append(name)
    if dropped:
        print(
            f"note: --sigma-start leaves out {', '.join(dropped)} (their schedules cannot start at sigma_T)"
        )
    return kept

"""The diffusers-geo command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ._help import plain


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusers-geo", description=plain(__doc__))
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench",
        help="quality vs NFE on the exact denoiser of a digits Gaussian mixture, or --overhead",
        description="Compare samplers on common noise with the exact optimal denoiser; prints Markdown "
        "tables and writes results.json and a PNG plot to --out.",
    )
    bench.add_argument(
        "--schedulers",
        default="all",
        help="comma-separated names ('all', 'ours', 'builtins', or names from --list); config overrides "
        "after colons, e.g. 'er-sde:solver_order=2:use_karras_sigmas=True'",
    )
    bench.add_argument(
        "--nfe", type=_int_list, default=[5, 6, 8, 10, 15, 20], help="target NFEs, e.g. 5,10,20"
    )
    bench.add_argument("--config", default="sd", help="'sd', 'ddpm' or a scheduler_config.json path")
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
    from .generate import add_generate_parser

    add_generate_parser(sub)
    from .gits_cli import add_gits_parser

    add_gits_parser(sub)
    from .demo import add_demo_parser

    add_demo_parser(sub)
    from .analyze import add_analyze_parser

    add_analyze_parser(sub)
    return parser


def resolve_names(text: str) -> list[str]:
    from .bench.samplers import resolve_names as resolve

    try:
        return resolve(text)
    except ValueError as err:
        raise SystemExit(f"diffusers-geo bench: {err}") from err


def run_bench(args: argparse.Namespace) -> int:
    from .bench import all_names, digits_mixture, load_config, run_overhead, run_quality
    from .bench.overhead import overhead_table
    from .bench.quality import floors, to_json
    from .bench.report import markdown_table, plot

    if args.list:
        print("\n".join(all_names()))
        return 0
    if args.seeds < 1 or args.samples < 2:
        raise SystemExit("diffusers-geo bench: --seeds must be >= 1 and --samples >= 2")
    names = resolve_names(args.schedulers)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        config = load_config(args.config, args.prediction)
    except ValueError as err:
        raise SystemExit(f"diffusers-geo bench: {err}") from err
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["schedulers"] = names
    command = "diffusers-geo " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("diffusers-geo") else None

    if args.overhead:
        rows = run_overhead(names, config, device=args.device)
        print(overhead_table(rows))
        (args.out / "overhead.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
        return 0

    model = digits_mixture(config, size=args.size)
    seeds = list(range(args.seeds))
    from .bench.start import make_start

    try:
        start = make_start(model, args.prior, args.sigma_start)
    except ValueError as err:
        raise SystemExit(f"diffusers-geo bench: {err}") from err
    runs, summaries = run_quality(
        model, config, names, args.nfe, seeds, args.samples, progress=not args.no_progress, start=start
    )
    summaries += floors(model, config, seeds, args.samples) + start.floors(model, seeds, args.samples)
    title = f"config={args.config} prediction={args.prediction} d={model.dim} samples={args.samples} seeds={args.seeds}"
    title += "" if start.is_default else f" {start.label}"
    print(f"# diffusers-geo bench ({title})" + (f"\n\n`{command}`" if command else ""))
    for metric in ("rmse", "fd", "mode_error"):
        print("\n" + markdown_table(summaries, metric, args.nfe))
    (args.out / "results.json").write_text(json.dumps(to_json(runs, summaries, settings), indent=1))
    plot(summaries, args.out / "quality_vs_nfe.png", title)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'quality_vs_nfe.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "generate":
        from .generate import run_generate

        return run_generate(args)
    if args.command == "gits":
        from .gits_cli import run_gits

        return run_gits(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args)
    if args.command == "analyze":
        from .analyze import run_analyze

        return run_analyze(args)
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":
    sys.exit(main())

"""``diffusers-geo eval``: which sampler and how many steps for your model and prompts.

Every scheduler at every NFE budget, from the same per-image noise as a converged reference run; writes
``eval.json`` (every cell, per-image metrics, settings), ``eval.md`` (the table and recommendations),
``quality_vs_nfe.png``, ``quality_vs_seconds.png`` and ``grid.png`` (one prompt across schedulers and NFE)
to ``--out``. Runs on the packaged model without ``--model``; splits the images over processes under
``accelerate launch`` like ``generate``; ``--resume`` reuses the finished cells of an earlier ``eval.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..diagnostics.grid import render_grid
from ..evaluation import (
    evaluate_schedulers,
    plot_result,
)
from ..registry import SCHEDULERS
from ._common import settings as command_settings
from ._common import start_and_load


def _prompts(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"--prompts {path}: no such file.")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {path} has no prompt (one per line).")
    return prompts


def run(args: argparse.Namespace) -> int:
    """Run ``diffusers-geo eval``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = _prompts(args.prompts)
    try:
        state, pipe = start_and_load(args.model, args.device, args.dtype)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(
            f"--model {args.model!r} is not a diffusers pipeline folder or hub id: {err}"
        ) from err
    previous = None
    report = args.out / "eval.json"
    if args.resume and report.is_file():
        previous = json.loads(report.read_text())
    result = evaluate_schedulers(
        pipe,
        prompts,
        schedulers=args.schedulers,
        nfe=args.nfe,
        reference=args.reference,
        num_images=args.num_images,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        resume=previous,
        state=state,
        clip_score=None if args.clip_model.lower() == "none" else args.clip_model,
    )
    if not state.is_main_process:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    result.settings["model"] = args.model or "packaged tiny-digits DDPM"
    result.settings["command"] = command_settings(args)
    result.settings["num_processes"] = state.num_processes
    report.write_text(json.dumps(result.to_json(), indent=1))
    table = result.markdown() + "\n\n" + "\n".join(f"- {line}" for line in result.recommendations())
    (args.out / "eval.md").write_text(table + "\n")
    plot_result(result, args.out / "quality_vs_nfe.png", args.out / "quality_vs_seconds.png")
    grid_cells = [cell for cell in result.cells if cell.images is not None]
    if grid_cells:
        title = f"{result.settings['model']} - same noise in every cell - reference {args.reference}"
        ours = [n for n in result.settings["schedulers"] if n.split(":")[0] in SCHEDULERS]
        render_grid(grid_cells, title, ours=ours).save(args.out / "grid.png")
    print(table)
    print(f"\nwrote {report}, eval.md, quality_vs_nfe.png, quality_vs_seconds.png and grid.png to {args.out}")
    return 0

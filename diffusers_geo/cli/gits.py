"""``diffusers-geo gits``: search a GITS schedule for a pipeline, split over processes with 🤗 Accelerate.

    diffusers-geo gits --model stable-diffusion-v1-5/stable-diffusion-v1-5 --steps 6 --prompt "a cat" \\
        --num-warmup 256 --seed 0 --out gits-6
    accelerate launch --multi_gpu --num_processes 4 -m diffusers_geo.cli gits --model ... --out gits-6

Warm-up sample ``i`` draws its noise from seed ``seed + i`` and the per-process cost sums are added up over
the processes (:func:`diffusers_geo.gits_schedule`), so any number of processes gives the same schedule
(up to float64 rounding of the mean cost; ``info.num_processes`` records how many ran). Without a GPU the
processes run on the CPU over gloo (use ``--multi_gpu`` there too). The main process writes ``--out`` as a
scheduler folder: ``scheduler_config.json`` (the pipeline's scheduler, or ``--scheduler``) and
``gits_schedule.json``; load it with ``GITSSchedule.from_pretrained(out)``, or copy both files into a
pipeline's ``scheduler/`` folder.
"""

from __future__ import annotations

import argparse

from ..gits import gits_schedule
from ..registry import make_scheduler
from ._common import start_and_load

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    state, pipe = start_and_load(args.model)
    scheduler = pipe.scheduler
    if args.scheduler is not None:  # checked before the search
        scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    call = {"prompt": args.prompt, "guidance_scale": args.guidance_scale}
    schedule = gits_schedule(
        pipe,
        args.steps,
        num_warmup=args.num_warmup,
        teacher_steps=args.teacher_steps,
        coeff=args.coeff,
        metric=args.metric,
        jump=args.jump,
        grid=args.grid,
        analytic_first_step=args.analytic_first_step,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        **{k: v for k, v in call.items() if v is not None},
    )
    if state.is_main_process:
        schedule.info.update(model=args.model, prompt=args.prompt, guidance_scale=args.guidance_scale)
        schedule.save_pretrained(args.out, scheduler=scheduler)
        try:
            schedule.apply(type(scheduler).from_config(scheduler.config))
        except TypeError as err:
            print(f"note: {err} Pass --scheduler (e.g. euler, dpmpp-2m) to save one that takes it.")
        print(
            f"GITS schedule ({args.steps} steps, {schedule.model_calls} model calls on {state.num_processes} "
            f"process(es)): sigmas {[round(s, 4) for s in schedule.sigmas]}, timesteps {schedule.timesteps}; "
            f"wrote {args.out} ({type(scheduler).__name__} config + gits_schedule.json)"
        )
    state.wait_for_everyone()
    return 0

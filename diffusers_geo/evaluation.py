"""Which sampler, and how many steps, for *your* model and prompts (``diffusers-geo eval``).

Every image ``i`` gets the seed ``seed + i`` and the prompt ``prompts[i % len(prompts)]``, and every scheduler
draws image ``i``'s initial noise (and its step noise, if stochastic) from a generator with that seed
(:func:`~diffusers_geo.sampling.run_pipeline`), so the differences in a table are the samplers', not the
seeds'. A converged *reference* run (``"dpmpp-2m-karras:100"``: that sampler with 100 steps) from the same
noise gives the target each deterministic sampler should reach:

* ``rmse``: root-mean-square distance of the final sample (latent space for latent pipelines, pixel space in
  [-1, 1] for pixel models) to the reference's; ``rel_rmse``: the same divided by the reference's RMS;
* ``psnr`` (dB, capped at 100 for identical images) and ``ssim`` (Wang et al. 2004, Gaussian window 11,
  sigma 1.5, on images in [0, 1]) of the decoded image against the decoded reference.

These compare paths from the same noise, so they mean "converged" only for deterministic samplers; a
stochastic sampler is judged by distribution metrics: FID's formula and KID between a cell's images and the
reference's, in FID's Inception features (torchmetrics, when it and its weights are available) or in the
features of an extractor you pass. Without one they are skipped with the reason in ``EvalResult.skipped``,
never estimated some other way. For a text-to-image pipeline every image also gets its CLIP score against its
prompt (Hessel et al., arXiv 2104.08718, as torchmetrics defines it: ``100 * max(cos(E_image, E_prompt), 0)``
with OpenAI's CLIP ViT-B/16), when that model is available (cached or downloadable), else it is skipped too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from transformers import CLIPModel, CLIPProcessor

from .gits import gits_schedule
from .metrics import feature_frechet_distance, kernel_distance, psnr, rmse, ssim
from .registry import is_stochastic, make_scheduler, resolve_names, serves_flow, split_gits
from .sampling import decode, run_pipeline, set_timesteps, steps_for_nfe, takes
from .schedulers.options import Bool, Choice, Int
from .solvers.arguments import MAPPING, Instance, Numbers

DEFAULT_SCHEDULERS = "ours,dpmpp-2m,unipc,euler"
DEFAULT_NFE = (4, 5, 6, 8, 10, 15, 20)
REFERENCE = "dpmpp-2m-karras:100"
#: the same defaults for flow-matching pipelines (SD3, Flux): diffusers' flow samplers
FLOW_DEFAULT_SCHEDULERS = "ours,flow-dpmpp-2m,flow-unipc,flow-euler"
FLOW_REFERENCE = "flow-dpmpp-2m:100"
#: the CLIP model of the per-image CLIP score (torchmetrics' default)
CLIP_MODEL = "openai/clip-vit-base-patch16"
#: relative-RMSE targets of the recommendations (fractions of the reference's RMS)
TARGETS = (0.05, 0.02)
FORMAT = "diffusers_geo.eval/1"


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------
@dataclass
class EvalCell:
    """One scheduler at one NFE budget: its per-image metrics (image order) and its cost."""

    scheduler: str
    scheduler_class: str
    stochastic: bool
    nfe_target: int
    steps: int
    model_calls: int = 0
    seconds_per_image: float = 0.0
    search_model_calls: int = 0  #: model calls a ``+gits`` name spent searching its schedule (once per run)
    #: FID's formula and KID of the cell's images against the reference's, in the extractor's features
    distribution: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, list[float]] = field(default_factory=dict)
    images: np.ndarray | None = field(default=None, repr=False)  #: the grid's images, floats in [0, 1]

    def summary(self) -> dict[str, tuple[float, float | None]]:
        """``metric -> (mean, std over images)``; the std is ``None`` from a single image."""
        out = {}
        for name, values in self.per_image.items():
            v = np.asarray(values, dtype=np.float64)
            out[name] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None)
        return out


@dataclass
class EvalResult:
    """What :func:`evaluate_schedulers` measured (see :meth:`markdown`, :meth:`to_json`)."""

    settings: dict[str, Any]
    reference: dict[str, Any]
    cells: list[EvalCell]
    skipped: dict[str, str] = field(default_factory=dict)  #: metric -> why it was not computed
    reference_images: np.ndarray | None = field(default=None, repr=False)

    def markdown(self) -> str:
        """One row per scheduler and NFE: model calls, seconds per image, and every metric as mean ± std."""
        metrics = list(dict.fromkeys(m for c in self.cells for m in c.per_image))
        extra = list(dict.fromkeys(m for c in self.cells for m in c.distribution))
        header = "| scheduler | NFE | calls | s/image | " + " | ".join(metrics + extra) + " |"
        lines = [header, "|" + "---|" * (4 + len(metrics) + len(extra))]
        for c in self.cells:
            summary = c.summary()
            cells = [
                f"{summary[m][0]:.4g}" + ("" if summary[m][1] is None else f" ± {summary[m][1]:.2g}")
                if m in summary
                else "–"
                for m in metrics
            ]
            cells += [f"{c.distribution[m]:.4g}" if m in c.distribution else "–" for m in extra]
            name = c.scheduler + (" (stochastic)" if c.stochastic else "")
            if c.search_model_calls:
                name += f" (schedule search: {c.search_model_calls} calls)"
            lines.append(
                f"| {name} | {c.nfe_target} | {c.model_calls} | {c.seconds_per_image:.3g} | "
                + " | ".join(cells)
                + " |"
            )
        ref = self.reference
        lines.append(
            f"\nReference: {ref['scheduler']} with {ref['steps']} steps ({ref['model_calls']} calls, "
            f"{ref['seconds_per_image']:.3g} s/image); {self.settings['num_images']} images"
            + (f"; its CLIP score {ref['clip_score']:.4g}." if "clip_score" in ref else ".")
        )
        for name, why in self.skipped.items():
            lines.append(f"{name}: skipped ({why})")
        return "\n".join(lines)

    def recommendations(self, targets: Sequence[float] = TARGETS) -> list[str]:
        """The cheapest deterministic cell (seconds per image, then model calls) within each relative-RMSE
        target of the reference, one line per target."""
        lines = []
        for target in targets:
            fits = [
                c
                for c in self.cells
                if not c.stochastic and c.summary().get("rel_rmse", (math.inf,))[0] <= target
            ]
            if not fits:
                lines.append(
                    f"RMSE within {target:.0%} of the reference: no scheduler reached it at these NFEs"
                )
                continue
            best = min(fits, key=lambda c: (c.seconds_per_image, c.model_calls))
            lines.append(
                f"RMSE within {target:.0%} of the reference: {best.scheduler} at {best.nfe_target} NFE "
                f"({best.model_calls} calls, {best.seconds_per_image:.3g} s/image)"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        cells = []
        for c in self.cells:
            row = {k: v for k, v in asdict(c).items() if k != "images"}
            row["summary"] = {k: list(v) for k, v in c.summary().items()}
            cells.append(row)
        return {
            "format": FORMAT,
            "settings": self.settings,
            "reference": self.reference,
            "skipped": self.skipped,
            "recommendations": self.recommendations(),
            "cells": cells,
        }


# --------------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------------
def parse_reference(spec: str) -> tuple[str, int]:
    """``"dpmpp-2m-karras:100"`` -> ``("dpmpp-2m-karras", 100)``: a sampler name (with options) and its steps."""
    name, sep, steps = spec.strip().rpartition(":")
    if not sep or not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"reference must be 'NAME:STEPS' (e.g. {REFERENCE!r}), got {spec!r}.")
    return name, int(steps)


def evaluate_schedulers(
    pipe,
    prompts: Sequence[str] | None = None,
    schedulers: str | Sequence[str] = DEFAULT_SCHEDULERS,
    nfe: Sequence[int] = DEFAULT_NFE,
    reference: str = REFERENCE,
    num_images: int = 64,
    seed: int = 0,
    batch_size: int = 16,
    grid_images: int = 4,
    features: Callable[[np.ndarray], torch.Tensor] | str | None = "inception",
    clip_score: Callable[[np.ndarray, Sequence[str]], torch.Tensor] | str | None = CLIP_MODEL,
    progress: bool = True,
    resume: Mapping[str, Any] | None = None,
    state=None,
) -> EvalResult:
    """Score ``schedulers`` at every NFE of ``nfe`` on ``pipe`` against a converged ``reference``.

    Args:
        pipe: any diffusers pipeline (text-to-image with ``prompts``, or unconditional).
        prompts: one or more prompts (image ``i`` uses ``prompts[i % len(prompts)]``); required exactly when
            the pipeline takes a prompt.
        schedulers: names as ``diffusers-geo bench --list`` gives them (with ``:key=value`` options), or the
            groups ``ours``, ``builtins``, ``all``; a comma-separated string or a list. A ``+gits`` suffix
            (``"dpmpp-2m+gits/num_warmup=64"``) runs the scheduler on a GITS schedule searched on this pipeline
            (:func:`~diffusers_geo.gits_schedule`, default 32 warm-up samples; its cost is reported).
        nfe: model-call budgets; each scheduler runs the largest step count that fits (and a budget below a
            scheduler's minimum is an error, before anything runs).
        reference: ``"NAME:STEPS"``, the converged run every sample is compared with. On a flow-matching
            pipeline (SD3, Flux) the default schedulers and reference are diffusers' flow samplers
            (:data:`FLOW_DEFAULT_SCHEDULERS`, :data:`FLOW_REFERENCE`), and the groups ``builtins`` / ``all``
            mean them.
        num_images, seed: images ``0 .. num_images - 1`` with seeds ``seed + i``.
        batch_size: images per pipeline call.
        grid_images: images kept per cell for the grid (those with the first prompt).
        features: maps images in [0, 1] ``(N, H, W, C)`` to feature vectors ``(N, k)`` for the distribution
            metrics (FID's formula and KID between each cell's images and the reference's): ``"inception"``
            (FID's Inception-v3 through torchmetrics, when available; else FID / KID are reported as
            skipped, with the reason), a callable of your own, or ``None``.
        clip_score: a text-to-image pipeline's per-image CLIP score against the image's prompt: a Hub id or
            folder of a ``transformers`` CLIP model (default :data:`CLIP_MODEL`; skipped with the reason when
            it cannot be loaded), a callable ``(images in [0, 1] (N, H, W, C), prompts) -> (N,) scores`` of
            your own, or ``None``. Unconditional pipelines have no prompt to score against.
        resume: a previous :meth:`EvalResult.to_json` with the same settings: its cells are reused.
        state: an ``accelerate.PartialState`` to split the images over processes (every process gets the
            whole result); ``None``: this process does everything.
    """
    if not callable(pipe) or not hasattr(pipe, "scheduler"):
        raise TypeError(f"pipe must be a diffusers pipeline (with a scheduler), got {type(pipe).__name__}.")
    if isinstance(pipe.scheduler, type):
        raise TypeError("pipe.scheduler must be a scheduler instance.")
    _check_arguments(
        schedulers=schedulers, reference=reference, features=features, clip_score=clip_score, resume=resume
    )
    Int(1)("num_images", num_images)
    Int()("seed", seed)
    Int(1)("batch_size", batch_size)
    Int(0)("grid_images", grid_images)
    Bool()("progress", progress)
    nfe = Numbers(ints=True)("nfe", nfe)
    if min(nfe) < 1:
        raise ValueError(f"nfe must be positive model-call budgets, got {list(nfe)}.")
    conditional = takes(pipe, "prompt")
    prompts = _check_prompts(prompts, conditional, type(pipe).__name__)
    base_config = dict(pipe.scheduler.config)
    text = schedulers if isinstance(schedulers, str) else ",".join(schedulers)
    if serves_flow(base_config):  # the defaults and groups mean diffusers' flow samplers on a flow model
        text = FLOW_DEFAULT_SCHEDULERS if text == DEFAULT_SCHEDULERS else text
        groups = {"builtins": "flow-builtins", "all": "flow-all"}
        text = ",".join(groups.get(p.strip(), p.strip()) for p in text.split(","))
        reference = FLOW_REFERENCE if reference == REFERENCE else reference
    names = resolve_names(text)
    if not names:
        raise ValueError("schedulers selects no scheduler.")
    reference_name, reference_steps = parse_reference(reference)
    plan = _plan(names, nfe, base_config)
    extract, why = _feature_extractor(features)  # every error here, before anything samples
    score_clip, why_clip = _clip_scorer(clip_score, prompts)
    make_scheduler(reference_name, base_config)

    original = pipe.scheduler
    settings = {
        "pipeline": type(pipe).__name__,
        "prompts": prompts,
        "num_images": num_images,
        "seed": seed,
        "reference": reference,
        "schedulers": names,
        "nfe": list(nfe),
        "dtype": str(getattr(pipe, "dtype", "")).removeprefix("torch."),
    }
    reused = _reusable(resume, settings)
    all_indices = list(range(num_images))
    grid = [i for i in all_indices if prompts is None or i % len(prompts) == 0][:grid_images]

    searched: dict[tuple, Any] = {}

    def gits(name: str, steps: int):
        """The GITS schedule of a ``+gits`` name, searched once per step count and options on this pipeline
        (warm-up noise from seeds no image uses), or ``None``; with the model calls the search cost."""
        options = split_gits(name)[1]
        if options is None:
            return None, 0
        key = (steps, tuple(sorted(options.items())))
        if key not in searched:
            kwargs = {"num_warmup": 32, "seed": seed + 1_000_000, "progress": False, **options}
            if prompts is not None:
                kwargs["prompt"] = prompts[0]
            schedule = gits_schedule(pipe, steps, **kwargs)
            searched[key] = (schedule, schedule.model_calls)
        return searched[key]

    def run(
        spec: str, steps: int, schedule=None
    ) -> tuple[dict[int, torch.Tensor], dict[int, np.ndarray], int, float]:
        """(final samples, decoded images) of this process's images, model calls per image batch, seconds."""
        mine = _split(all_indices, state)
        samples, images, calls, seconds = {}, {}, 0, 0.0
        for start in range(0, len(mine), batch_size):
            batch = mine[start : start + batch_size]
            scheduler = make_scheduler(spec, base_config)
            batch_prompts = None if prompts is None else [prompts[i % len(prompts)] for i in batch]
            tic = time.perf_counter()
            out, calls = run_pipeline(
                pipe, scheduler, steps, [seed + i for i in batch], batch_prompts, "latent", schedule
            )
            decoded = decode(pipe, out)
            seconds += time.perf_counter() - tic
            for k, i in enumerate(batch):
                samples[i], images[i] = out[k].detach().float().cpu(), decoded[k]
        return samples, images, calls, seconds

    try:
        ref_samples, ref_images, ref_calls, ref_seconds = run(reference_name, reference_steps)
        ref_features = None if extract is None else _features(extract, ref_images, all_indices, state)
        reference_info = {
            "scheduler": reference_name,
            "steps": reference_steps,
            "model_calls": ref_calls,
            "seconds_per_image": _per_image(ref_seconds, len(ref_samples), state),
        }
        cells: list[EvalCell] = []
        from tqdm.auto import tqdm  # optional dependency, imported when used (it comes with huggingface_hub)

        shown = progress and (state is None or state.is_main_process)
        bar = tqdm(total=len(plan), desc="eval", unit="cell", disable=not shown)
        for name, target, steps, scheduler_class, stochastic in plan:
            bar.set_postfix_str(f"{name} NFE {target}")
            key = (name, target)
            if key in reused:
                cells.append(reused[key])
                bar.update()
                continue
            schedule, search_calls = gits(name, steps)
            samples, images, calls, seconds = run(name, steps, schedule)
            local = {
                i: {
                    "rmse": (distance := float(rmse(samples[i][None], ref_samples[i][None])[0])),
                    "rel_rmse": distance / _rms(ref_samples[i]),
                    "psnr": float(psnr(images[i][None], ref_images[i][None])[0]),
                    "ssim": float(ssim(images[i][None], ref_images[i][None])[0]),
                }
                for i in samples
            }
            per_index = _gather(local, state)
            cell = EvalCell(
                name, scheduler_class, stochastic, target, steps, calls, search_model_calls=search_calls
            )
            cell.seconds_per_image = _per_image(seconds, len(samples), state)
            for metric in ("rmse", "rel_rmse", "psnr", "ssim"):
                cell.per_image[metric] = [per_index[i][metric] for i in all_indices]
            if score_clip is not None:
                cell.per_image["clip_score"] = _clip_scores(score_clip, images, prompts, all_indices, state)
            cell.images = _grid_images(images, grid, state)
            if ref_features is not None:
                mine = _features(extract, images, all_indices, state)
                cell.distribution = {
                    "fid": feature_frechet_distance(mine, ref_features),
                    "kid": kernel_distance(mine, ref_features),
                }
            cells.append(cell)
            bar.update()
        bar.close()
    finally:
        pipe.scheduler = original
    result = EvalResult(
        settings, reference_info, cells, reference_images=_grid_images(ref_images, grid, state)
    )
    if extract is None:
        result.skipped.update(fid=why, kid=why)
    if score_clip is None:
        result.skipped["clip_score"] = why_clip
    else:
        result.reference["clip_score"] = float(
            np.mean(_clip_scores(score_clip, ref_images, prompts, all_indices, state))
        )
    return result


def _check_arguments(schedulers, reference, features, clip_score, resume) -> None:
    """The types of :func:`evaluate_schedulers`' selection and scoring arguments (their meaning is checked
    where they are read: names by the registry, the reference by :func:`parse_reference`)."""
    names = [schedulers] if isinstance(schedulers, str) else schedulers
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"schedulers must be a comma-separated str or a list of names, got {schedulers!r}; "
            "see `diffusers-geo bench --list`."
        )
    Instance(str, "a str 'NAME:STEPS'")("reference", reference)
    if isinstance(features, str):
        Choice(("inception",), hint="or pass a callable, or None")("features", features)
    elif features is not None and not callable(features):
        raise TypeError(f'features must be "inception", a callable or None, got {features!r}.')
    if clip_score is not None and not isinstance(clip_score, str) and not callable(clip_score):
        raise TypeError(
            f"clip_score must be a CLIP model id or folder, a callable or None, got {clip_score!r}."
        )
    MAPPING("resume", resume)


def _check_prompts(prompts, conditional: bool, pipeline: str) -> list[str] | None:
    if isinstance(prompts, str):
        prompts = [prompts]
    if prompts is not None and (
        not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts)
    ):
        raise TypeError(f"prompts must be a str or a list of str, got {prompts!r}.")
    if prompts is not None:
        prompts = [p.strip() for p in prompts if p.strip()]
        if not prompts:
            raise ValueError("the prompts are empty: give at least one non-empty prompt.")
    if conditional and prompts is None:
        raise ValueError(f"{pipeline} takes a prompt: pass prompts (--prompts FILE, one prompt per line).")
    if not conditional and prompts is not None:
        raise ValueError(f"{pipeline} is unconditional: it takes no prompt; drop the prompts.")
    return prompts


def _plan(names: Sequence[str], nfes: Sequence[int], config: Mapping[str, Any]):
    """``(name, nfe, steps, class name, stochastic)`` for every cell; a budget a scheduler cannot meet is an
    error here, before any sampling."""
    plan = []
    for name in names:
        scheduler = make_scheduler(name, config)
        set_timesteps(scheduler, 1)  # as the pipeline would (Flux: its sigmas and mu)
        minimum = len(scheduler.timesteps)
        for target in nfes:
            steps = steps_for_nfe(scheduler, target)
            if steps is None:
                raise ValueError(
                    f"NFE {target} is below {name}'s minimum of {minimum} model calls (one step); drop it from "
                    "the NFE list or the scheduler."
                )
            plan.append((name, target, steps, type(scheduler).__name__, is_stochastic(scheduler)))
    return plan


def _reusable(
    resume: Mapping[str, Any] | None, settings: Mapping[str, Any]
) -> dict[tuple[str, int], EvalCell]:
    if resume is None:
        return {}
    if resume.get("format") != FORMAT:
        raise ValueError(f"cannot resume: not an eval result ({resume.get('format')!r}).")
    old = {
        k: resume["settings"].get(k)
        for k in ("pipeline", "prompts", "num_images", "seed", "reference", "dtype")
    }
    new = {k: settings[k] for k in old}
    if old != new:
        changed = sorted(k for k in old if old[k] != new[k])
        raise ValueError(f"cannot resume: the previous run had other settings ({', '.join(changed)}).")
    cells = {}
    for row in resume["cells"]:
        row = {k: v for k, v in row.items() if k != "summary"}
        cell = EvalCell(**row)
        cells[(cell.scheduler, cell.nfe_target)] = cell
    return cells


def _split(indices: list[int], state) -> list[int]:
    if state is None or state.num_processes == 1:
        return indices
    with state.split_between_processes(indices) as mine:
        return list(mine)


def _gather(local: dict[int, Any], state) -> dict[int, Any]:
    if state is None or state.num_processes == 1:
        return local
    merged: dict[int, Any] = {}
    for part in gather_object([local]):
        merged.update(part)
    return merged


def _per_image(seconds: float, count: int, state) -> float:
    per = seconds / max(count, 1)
    if state is None or state.num_processes == 1:
        return per
    values = _gather({state.process_index: per}, state)
    return float(np.mean(list(values.values())))


def _grid_images(images: Mapping[int, np.ndarray], grid: Sequence[int], state) -> np.ndarray | None:
    mine = {i: images[i] for i in grid if i in images}
    merged = _gather(mine, state)
    return np.stack([merged[i] for i in grid]) if grid else None


def _features(extract, images: Mapping[int, np.ndarray], indices: Sequence[int], state) -> torch.Tensor:
    """Feature rows of every image (this process's images, gathered), in image order."""
    mine = sorted(images)
    rows = extract(np.stack([images[i] for i in mine])) if mine else torch.zeros(0)
    merged = _gather({i: rows[k].cpu() for k, i in enumerate(mine)}, state)
    return torch.stack([merged[i] for i in indices])


def _rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt().clamp_min(1e-30))


def inception_features() -> Callable[[np.ndarray], torch.Tensor]:
    """FID's feature extractor: torchmetrics' Inception-v3 (``inception-v3-compat``, 2048 pool features) on
    images in [0, 1]. Needs torchmetrics and its weights (downloaded on first use, or cached): raises with
    the reason otherwise, and :func:`evaluate_schedulers` then reports FID / KID as skipped."""
    from torchmetrics.image.fid import NoTrainInceptionV3  # optional dependency, imported when used

    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).eval()

    @torch.no_grad()
    def extract(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy((np.clip(images, 0, 1) * 255).round().astype(np.uint8)).permute(0, 3, 1, 2)
        return net(x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x).double()

    return extract


def clip_scorer(model: str = CLIP_MODEL) -> Callable[[np.ndarray, Sequence[str]], torch.Tensor]:
    """Per-image CLIP score (Hessel et al., arXiv 2104.08718; torchmetrics' ``CLIPScore`` definition):
    ``100 * max(cos(E_image, E_prompt), 0)`` with a ``transformers`` CLIP model (Hub id or folder), on images
    in [0, 1]. Raises when the model cannot be loaded (offline without a cached copy)."""
    net, processor = CLIPModel.from_pretrained(model).eval(), CLIPProcessor.from_pretrained(model)

    @torch.no_grad()
    def score(images: np.ndarray, prompts: Sequence[str]) -> torch.Tensor:
        pixels = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        pixels = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels
        inputs = processor(
            text=list(prompts), images=list(pixels), return_tensors="pt", padding=True, truncation=True
        )
        out = net(**inputs)
        image = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        return (100 * (image * text).sum(-1)).clamp_min(0).double()

    return score


def _clip_scorer(clip_score, prompts) -> tuple[Callable | None, str | None]:
    if prompts is None:
        return None, "the pipeline takes no prompt to score against"
    if callable(clip_score):
        return clip_score, None
    if clip_score is None:
        return None, "no CLIP model (clip_score=None)"
    try:
        return clip_scorer(clip_score), None
    except Exception as err:  # any failure to load it (package, weights offline) is a skip, with the reason
        return None, f"the CLIP model {clip_score!r} is not available ({type(err).__name__}: {err})"


def _clip_scores(
    score, images: Mapping[int, np.ndarray], prompts, indices: Sequence[int], state
) -> list[float]:
    """CLIP score of every image against its prompt (``prompts[i % len(prompts)]``), in image order."""
    mine = sorted(images)
    values = (
        score(np.stack([images[i] for i in mine]), [prompts[i % len(prompts)] for i in mine]) if mine else []
    )
    merged = _gather({i: float(values[k]) for k, i in enumerate(mine)}, state)
    return [merged[i] for i in indices]


def _feature_extractor(features) -> tuple[Callable[[np.ndarray], torch.Tensor] | None, str | None]:
    if callable(features):
        return features, None
    if features is None:
        return None, "no feature extractor (features=None)"
    try:
        return inception_features(), None
    except Exception as err:  # any failure to build it (package, weights offline) is a skip, with the reason
        return None, f"FID's Inception features are not available ({type(err).__name__}: {err})"


def plot_result(result: EvalResult, by_nfe: str, by_seconds: str) -> None:
    """Quality against NFE and against seconds per image (relative RMSE and SSIM; one line per scheduler)."""
    import matplotlib  # optional dependency, imported when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency, imported when used

    names = list(dict.fromkeys(c.scheduler for c in result.cells))
    for path, axis, label in (
        (by_nfe, "nfe_target", "model calls (NFE)"),
        (by_seconds, "seconds_per_image", "s/image"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric, title in zip(
            axes, ("rel_rmse", "ssim"), ("RMSE / reference RMS", "SSIM"), strict=True
        ):
            for name in names:
                cells = [c for c in result.cells if c.scheduler == name]
                xs = [getattr(c, axis) for c in cells]
                ys = [c.summary()[metric][0] for c in cells]
                ax.plot(xs, ys, marker="o", label=name, ls="--" if cells[0].stochastic else "-")
            ax.set_xlabel(label)
            ax.set_title(title)
            if metric == "rel_rmse":
                ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle(
            f"{result.settings['pipeline']}, {result.settings['num_images']} images, reference "
            f"{result.settings['reference']}"
        )
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

"""Train the packaged default model: a tiny DDPM ``UNet2DModel`` on scikit-learn's digits, on a CPU.

Data: the 1,797 bundled 8×8 digits, scaled to [-1, 1] (:func:`diffusers_geo.data.digits_images`;
``--size 16`` upsamples them bilinearly). Model: a 2-level ``UNet2DModel`` (16 and 32 channels, one ResNet
per level, attention only in the 4×4 middle block), ε-prediction, trained with the standard DDPM loss
``|ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)|²`` (Ho et al. 2020, Algorithm 1) under the standard DDPM schedule
(``DDPMScheduler()`` defaults: 1000 steps, linear β 1e-4..0.02). AdamW with a linear warm-up to a constant
learning rate; the saved weights are an exponential moving average (EMA) of the trained ones.

Everything is seeded (weights, batches, timesteps, noise) and the thread count is fixed, so a rerun on the
same machine and torch build writes the same weights bit for bit (other CPUs or torch versions may differ
in the last bits of float32 arithmetic).

The packaged ``diffusers_geo/assets/tiny-digits`` was made with (wall time and CPU time measured on a 2-core
machine shared with other jobs; see ``asset README.md`` next to the weights for the numbers)::

    python examples/train_tiny_model.py --threads 1

``--flow`` trains the same network as a flow-matching (rectified-flow) model instead, as SD3 and Flux are
trained: ``x_s = (1 − s) x0 + s ε``, velocity target ``ε − x0`` at timestep ``1000 s``, ``s`` drawn
logit-normal (Esser et al., SD3, arXiv 2403.03206, eq. 19), saved with ``FlowMatchEulerDiscreteScheduler()``
(``shift=1``) in a ``DDPMPipeline``, whose loop runs any scheduler (``--out`` is then required: the packaged
model stays the DDPM one)::

    python examples/train_tiny_model.py --flow --threads 1 --out tiny-digits-flow

At the end the script scores ``--eval-samples`` 50-step DDPM samples of the trained model and of the same
architecture with its random initial weights (:func:`diffusers_geo.models.default_model.score_digits`) and writes
the numbers into the folder's README.md. ``--preview grid.png`` also writes the trained samples as a PNG;
``--steps 2 --eval-samples 0 --out /tmp/x`` is a smoke test.

``--channels`` and ``--layers-per-block`` widen and deepen the network (one ``DownBlock2D`` / ``UpBlock2D`` per
channel count). The larger second model of ``docs/eval.md`` (about 1.5 M parameters, three levels) was made
with::

    python examples/train_tiny_model.py --channels 32,64,64 --layers-per-block 2 --steps 2400 --threads 1 \
        --out tiny-digits-large
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel

from diffusers_geo.data import digits_images
from diffusers_geo.models.default_model import DEFAULT_MODEL_SIZE, default_model_path, score_digits

#: The architecture of the packaged model (about 164 K parameters).
UNET_CONFIG = {
    "sample_size": DEFAULT_MODEL_SIZE,  # --size changes it
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}


def learning_rate(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak``, then constant: the run is then a prefix of any longer run with the same
    seed, so ``--save-every`` checkpoints equal the models of shorter runs."""
    return peak * min(1.0, (step + 1) / warmup)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)


def make_scheduler(flow: bool):
    """The scheduler saved with the model: DDPM's defaults, or flow matching's (``shift=1``)."""
    return FlowMatchEulerDiscreteScheduler() if flow else DDPMScheduler()


@torch.no_grad()
def sample_ddpm(
    unet: UNet2DModel, num_images: int, steps: int = 50, seed: int = 0, flow: bool = False
) -> torch.Tensor:
    """``num_images`` samples of ``steps``-step DDPM (the packaged scheduler; flow Euler with ``flow``), in
    [-1, 1]."""
    pipe = DDPMPipeline(unet=unet, scheduler=make_scheduler(flow))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        batch_size=num_images,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    ).images
    return images * 2.0 - 1.0


def save_preview(samples: torch.Tensor, path: Path, columns: int = 8) -> None:
    from PIL import Image

    n, _, h, w = samples.shape
    rows = math.ceil(n / columns)
    grid = torch.ones(rows * (h + 1) + 1, columns * (w + 1) + 1)
    for i, image in enumerate(samples[:, 0].clamp(-1, 1)):
        r, c = divmod(i, columns)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = (image + 1) / 2
    scale = max(1, 48 // h)
    pixels = (grid * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def save(unet: UNet2DModel, folder: Path, flow: bool = False) -> None:
    DDPMPipeline(unet=unet, scheduler=make_scheduler(flow)).save_pretrained(folder, safe_serialization=True)


def unet_config(args: argparse.Namespace) -> dict:
    """The packaged architecture at ``--size``, widened / deepened by ``--channels`` / ``--layers-per-block``."""
    config = dict(UNET_CONFIG, sample_size=args.size)
    if args.channels is not None:
        config["block_out_channels"] = tuple(args.channels)
        config["down_block_types"] = ("DownBlock2D",) * len(args.channels)
        config["up_block_types"] = ("UpBlock2D",) * len(args.channels)
    if args.layers_per_block is not None:
        config["layers_per_block"] = args.layers_per_block
    return config


def train(args: argparse.Namespace) -> UNet2DModel:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = digits_images(args.size)
    config = unet_config(args)
    unet = UNet2DModel(**config)
    ema = UNet2DModel(**config)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    scheduler = DDPMScheduler()  # the standard DDPM config: 1000 steps, linear β 1e-4..0.02, ε
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    warmup = 100

    wall, cpu, running = time.perf_counter(), time.process_time(), 0.0
    args.final_loss = float("nan")
    unet.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.lr, warmup)
        index = torch.randint(len(data), (args.batch_size,), generator=generator)
        x0 = data[index]
        noise = torch.randn(x0.shape, generator=generator)
        if args.flow:  # rectified flow: x_s = (1 - s) x0 + s eps, target eps - x0, s logit-normal
            s = torch.sigmoid(torch.randn(args.batch_size, generator=generator)).reshape(-1, 1, 1, 1)
            x_s = (1 - s) * x0 + s * noise
            loss = F.mse_loss(unet(x_s, 1000.0 * s.flatten()).sample, noise - x0)
        else:
            t = torch.randint(scheduler.config.num_train_timesteps, (args.batch_size,), generator=generator)
            loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema_update(ema, unet, min(args.ema_decay, (1 + step) / (10 + step)))
        running += loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            count = (step % args.log_every) + 1
            args.final_loss = running / count
            print(
                f"step {step + 1}/{args.steps}  loss {args.final_loss:.4f}  "
                f"wall {time.perf_counter() - wall:.0f} s  cpu {time.process_time() - cpu:.0f} s",
                flush=True,
            )
            running = 0.0
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save(ema, args.out / f"step-{step + 1}")
    args.wall_seconds = time.perf_counter() - wall
    args.cpu_seconds = time.process_time() - cpu
    return ema.eval()


CARD = """# tiny-digits{suffix}: {title}

A `DDPMPipeline` (diffusers) with a {parameters:,}-parameter `UNet2DModel` (1 channel, {size}x{size} pixels,
{kind}). Trained on scikit-learn's 1,797 bundled 8x8 handwritten digits scaled to [-1, 1]; the weights
are an EMA of the trained ones. `diffusers-geo demo` samples from it.

```python
from diffusers import DDPMPipeline
from diffusers_geo import default_model_path

pipe = DDPMPipeline.from_pretrained(default_model_path())
images = pipe(batch_size=16, num_inference_steps=50).images
```

Made by `examples/train_tiny_model.py` (CPU only, seeded, reproducible bit for bit on the same machine and
torch build):

```bash
python examples/train_tiny_model.py {command}
```

The run's settings and numbers (`wall_seconds`/`cpu_seconds`: the training loop on one thread of a
2-core machine shared with other jobs; `final_loss`: the mean ε-MSE of the last {log_every} steps).
`eval` scores {samples} samples of 50-step DDPM (seed 0) with `diffusers_geo.models.default_model.score_digits`,
for the trained model, the same network with its random initial weights, and real digits:
`confidence` is the mean top-class probability of a logistic-regression digits classifier,
`num_classes` the number of different digits it sees, `nn_rms` the median RMS distance (pixels in
[-1, 1]) to the nearest training digit, to compare with `data_nn_rms`, that distance among real digits.

```json
{summary}
```
"""


def _rounded(score) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(score).items()}


def write_card(folder: Path, summary: dict, argv: list[str], log_every: int) -> None:
    """The folder's README.md: what the model is, how it was made, and the training run's numbers."""
    command = " ".join(a for a in argv if a)
    flow = summary.get("flow", False)
    text = CARD.format(
        suffix="-flow" if flow else "",
        title="a flow-matching model of diffusers-geo's digits"
        if flow
        else "the default model of diffusers-geo",
        kind=(
            "velocity prediction, trained as a rectified flow `x_s = (1 - s) x0 + s ε`) and "
            "`FlowMatchEulerDiscreteScheduler()` (shift 1); `eval` samples with 50-step flow Euler"
            if flow
            else "ε-prediction) and the standard DDPM scheduler config (`DDPMScheduler()` defaults: 1000 steps, "
            "linear β from 1e-4 to 0.02)"
        ),
        parameters=summary["parameters"],
        size=summary["size"],
        command=command,
        log_every=min(log_every, summary["steps"]),
        samples=summary.get("eval", {}).get("samples", 0),
        summary=json.dumps(summary, indent=1),
    )
    (folder / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=default_model_path(), help="pipeline folder to write")
    parser.add_argument("--size", type=int, default=DEFAULT_MODEL_SIZE, help="image side (8: native digits)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (fixed for reproducibility)"
    )
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--save-every", type=int, default=0, help="also write the EMA model every N steps to OUT/step-N"
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=64,
        help="score this many 50-step DDPM samples (trained and random weights) for the README; 0: skip",
    )
    parser.add_argument("--preview", type=Path, default=None, help="write the scored samples as a PNG")
    parser.add_argument(
        "--flow", action="store_true", help="a flow-matching (velocity) model instead of DDPM's ε-model"
    )
    parser.add_argument(
        "--channels",
        type=lambda text: [int(c) for c in text.split(",")],
        default=None,
        help="channels per UNet level, e.g. 32,64,64 (default: the packaged 16,32)",
    )
    parser.add_argument(
        "--layers-per-block", type=int, default=None, help="ResNet layers per level (default 1)"
    )
    args = parser.parse_args(argv)
    if args.flow and args.out == default_model_path():
        parser.error("--flow needs --out: the packaged model is the DDPM one")
    if args.steps < 1 or args.batch_size < 1 or args.threads < 1:
        parser.error("--steps, --batch-size and --threads must be positive")
    custom = args.channels is not None or args.layers_per_block is not None
    if custom and args.out == default_model_path():
        parser.error("--channels / --layers-per-block need --out: the packaged model keeps its architecture")
    if args.channels is not None and (
        not args.channels or min(args.channels) < 8 or any(c % 8 for c in args.channels)
    ):
        parser.error(f"--channels must be multiples of 8 (GroupNorm of 8 groups), got {args.channels}")
    if args.channels is not None and args.size % 2 ** (len(args.channels) - 1):
        parser.error(
            f"--size {args.size} must be divisible by 2^(levels - 1) for {len(args.channels)} levels"
        )
    if args.layers_per_block is not None and args.layers_per_block < 1:
        parser.error("--layers-per-block must be >= 1")
    if args.eval_samples < 0 or (args.preview is not None and args.eval_samples < 1):
        parser.error("--eval-samples must be >= 0 (and >= 1 with --preview)")

    unet = train(args)
    save(unet, args.out, args.flow)
    parameters = sum(p.numel() for p in unet.parameters())
    summary = {
        "parameters": parameters,
        "size": args.size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ema_decay": args.ema_decay,
        "seed": args.seed,
        "threads": args.threads,
        "flow": args.flow,
        "wall_seconds": round(args.wall_seconds, 1),
        "cpu_seconds": round(args.cpu_seconds, 1),
        "final_loss": round(args.final_loss, 4),
        "torch": torch.__version__,
    }
    if custom:  # the architecture, where it is not the packaged one
        config = unet_config(args)
        summary["block_out_channels"] = list(config["block_out_channels"])
        summary["layers_per_block"] = config["layers_per_block"]
    if args.eval_samples:
        samples = sample_ddpm(unet, args.eval_samples, flow=args.flow)
        if args.preview is not None:
            save_preview(samples, args.preview)
            print(f"preview: {args.preview}")
        torch.manual_seed(args.seed)  # the initial weights of the run
        untrained = UNet2DModel(**unet_config(args)).eval()
        summary["eval"] = {
            "samples": args.eval_samples,
            "steps": 50,
            "seed": 0,
            "trained": _rounded(score_digits(samples)),
            "random_weights": _rounded(
                score_digits(sample_ddpm(untrained, args.eval_samples, flow=args.flow))
            ),
            "real_digits": _rounded(score_digits(digits_images(args.size)[:: 1797 // args.eval_samples])),
        }
    print(json.dumps(summary))
    write_card(args.out, summary, sys.argv[1:] if argv is None else argv, args.log_every)
    print(f"wrote {args.out} ({parameters} parameters)")
    return args.out


if __name__ == "__main__":
    main()

"""Tiny, offline, random-weight diffusers pipelines for tests and examples.

Every builder creates the *real* diffusers classes (``DDPMPipeline``, ``StableDiffusionPipeline`` and
friends, ``StableDiffusionXLPipeline`` + refiner, and the flow-matching ``StableDiffusion3Pipeline`` and
``FluxPipeline`` with their img2img and inpainting variants) from hand-written configs, so the pipeline code a user
runs is the code under test, but the models are a few thousand parameters: a 4-step txt2img run takes
milliseconds on a CPU and nothing is downloaded (no Hugging Face Hub access at all).

Weights are deterministic given ``seed``: each model is built right after ``torch.manual_seed(seed)``
inside :func:`torch.random.fork_rng`, so building a pipeline neither depends on nor changes the global
RNG state.

    pipe = tiny_sd_pipeline("img2img", scheduler=lambda config: load_scheduler("sigma-ddim", config))
    image = pipe("a cat", image=tiny_image(0), strength=0.5, num_inference_steps=4).images[0]

The ``scheduler`` argument of every builder takes a scheduler instance (installed as is), a scheduler
class or a callable ``config -> scheduler`` (called with the pipeline's default scheduler config, e.g.
``lambda c: load_scheduler("sigma-ddim", c)``), or a :data:`diffusers_geo.SCHEDULERS` name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    Cosmos2TextToImagePipeline,
    CosmosTransformer3DModel,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    LTXConditionPipeline,
    LTXVideoTransformer3DModel,
    SchedulerMixin,
    SD3Transformer2DModel,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    T5Config,
    T5EncoderModel,
)

from .registry import SchedulerSpec, make_scheduler
from .schedules.flow import FLUX_SCHEDULER_CONFIG, SD3_SCHEDULER_CONFIG

__all__ = [
    "save_tiny_clip_model",
    "tiny_clip_tokenizer",
    "tiny_cogvideox_pipeline",
    "tiny_ltx_condition_pipeline",
    "tiny_ddpm_pipeline",
    "tiny_flux_pipeline",
    "tiny_sd3_pipeline",
    "tiny_image",
    "tiny_mask",
    "tiny_sd_components",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipelines",
]


# Sizes shared by the builders (kept in one place so the shapes below stay consistent).
TEXT_HIDDEN_SIZE = 32  # hidden size of every tiny CLIP text encoder (= UNet cross_attention_dim for SD)
TEXT_PROJECTION_DIM = 32  # projection_dim of the SDXL CLIPTextModelWithProjection
ADDITION_TIME_EMBED_DIM = 8  # SDXL micro-conditioning embedding size per scalar
LATENT_SIZE = 8  # UNet sample_size; images are LATENT_SIZE * vae_scale_factor = 16 pixels wide
# Two resolution levels of 8 and 16 channels: every tiny UNet and the VAE share this shape.
TINY_BLOCKS: dict[str, Any] = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}

# The two noise schedules every test runs on: Stable Diffusion's scaled-linear betas and DDPM's linear ones.
SD_BETAS: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)
DDPM_BETAS: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"
)

# Every own option of every diffusers-geo scheduler, set away from its default (a new scheduler must add its
# own here; tests/test_hub.py checks that none is missing).
OWN_OVERRIDES: dict[str, dict] = {
    "ERSDEScheduler": dict(
        solver_order=2, noise_scale="power-2.5", eta=0.5, s_noise=0.9, quadrature="riemann-200"
    ),
    "ProjectionDDIMScheduler": dict(
        gamma=1.5, mu=0.2, schedule="spacing", start_sigma=8.35, log_linear_end="ddim"
    ),
    "SigmaDDIMScheduler": {},
    "GeometricHeunScheduler": dict(
        multistep=False,
        intermediate_point=0.5,
        max_multistep_weight=1.5,
        corrector=False,
    ),
}
# options that cannot be combined with the values above; their round trip is tested elsewhere
EXEMPT: dict[str, set[str]] = {
    # flow models only, with mu = 0 (tests/test_flow_matching.py saves and reloads it)
    "ProjectionDDIMScheduler": {"correction"},
}

# Stable Diffusion 1.x scheduler config (what `runwayml/stable-diffusion-v1-5` ships, minus the class).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    **SD_BETAS,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

_M = TypeVar("_M")


def _seeded(seed: int, build: Callable[[], _M]) -> _M:
    """Run ``build`` right after ``torch.manual_seed(seed)`` without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _install(pipe, spec: SchedulerSpec | None):
    if spec is not None:
        pipe.scheduler = make_scheduler(spec, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------------------
# pixel space: DDPMPipeline
# --------------------------------------------------------------------------------------------------
def tiny_ddpm_pipeline(
    scheduler: SchedulerSpec | None = None, sample_size: int = 8, seed: int = 0
) -> DDPMPipeline:
    """A ``DDPMPipeline`` with a tiny random ``UNet2DModel`` (3 channels, ``sample_size`` pixels).

    The default scheduler is ``DDPMScheduler`` with linear betas (1e-4 .. 0.02, 1000 steps).
    """
    unet = _seeded(
        seed,
        lambda: UNet2DModel(
            sample_size=sample_size,
            in_channels=3,
            out_channels=3,
            **TINY_BLOCKS,
            attention_head_dim=8,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        ),
    )
    default = DDPMScheduler(**DDPM_BETAS)
    return _install(DDPMPipeline(unet=unet, scheduler=default), scheduler)


# --------------------------------------------------------------------------------------------------
# text encoders and tokenizers
# --------------------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map (256 entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tiny_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer over a 514-entry byte-level vocabulary with no merges (built in memory).

    Every byte is a token, once plain and once with the end-of-word suffix ``</w>``, plus
    ``<|startoftext|>`` (id 512) and ``<|endoftext|>`` (id 513, also the padding token). Any text
    tokenises (character by character); ``model_max_length`` is required, otherwise padding and
    truncation to the text encoder's length do not happen.
    """
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def _clip_text_config(tokenizer: CLIPTokenizer, **overrides: Any) -> CLIPTextConfig:
    config = {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_HIDDEN_SIZE,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": tokenizer.model_max_length,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config.update(overrides)
    return CLIPTextConfig(**config)


def save_tiny_clip_model(folder: str | os.PathLike, seed: int = 0) -> str:
    """Save a tiny random CLIP model (text and 16 x 16 vision towers, 16-dimensional projections) with its
    processor to ``folder``, loadable by ``CLIPModel.from_pretrained`` / ``CLIPProcessor.from_pretrained``: the
    offline stand-in for the CLIP score of ``diffusers-geo eval --clip-model``. Returns the folder."""
    tokenizer = tiny_clip_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=TEXT_HIDDEN_SIZE, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
        image_size=16, patch_size=8,
    )  # fmt: skip
    config = CLIPConfig(
        text_config=_clip_text_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    _seeded(seed, lambda: CLIPModel(config)).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return os.fspath(folder)


def _tiny_vae(seed: int) -> AutoencoderKL:
    """A 2-level ``AutoencoderKL`` (vae_scale_factor 2, 4 latent channels)."""
    return _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            **TINY_BLOCKS,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            sample_size=2 * LATENT_SIZE,
        ),
    )


# --------------------------------------------------------------------------------------------------
# Stable Diffusion 1.x / 2.x
# --------------------------------------------------------------------------------------------------
def _sd_scheduler(prediction_type: str) -> DDIMScheduler:
    """SD 1.x's DDIM config; for v-prediction SD 2.x-style "trailing" spacing."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}.")
    config = dict(SD_SCHEDULER_CONFIG, prediction_type=prediction_type)
    if prediction_type == "v_prediction":
        config["timestep_spacing"] = "trailing"
    return DDIMScheduler(**config)


def tiny_sd_components(
    prediction_type: str = "epsilon", in_channels: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Components of a tiny Stable Diffusion pipeline, for ``StableDiffusion*Pipeline(**components)``.

    Args:
        prediction_type: "epsilon" (SD 1.x config, "leading" spacing with ``steps_offset=1``) or
            "v_prediction" (SD 2.x config, "trailing" spacing).
        in_channels: UNet input channels: 4, or 9 for an inpainting UNet (latents, mask, masked image).
        seed: weight seed.

    Returns:
        ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` (a ``DDIMScheduler``) and
        ``safety_checker=None``, ``feature_extractor=None``, ``image_encoder=None``,
        ``requires_safety_checker=False``.
    """
    tokenizer = tiny_clip_tokenizer()
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=LATENT_SIZE,
            in_channels=in_channels,
            out_channels=4,
            **TINY_BLOCKS,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN_SIZE,
            attention_head_dim=4,
        ),
    )
    text_encoder = _seeded(seed, lambda: CLIPTextModel(_clip_text_config(tokenizer)))
    return {
        "unet": unet,
        "vae": _tiny_vae(seed),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": _sd_scheduler(prediction_type),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


_SD_PIPELINES = {
    "txt2img": StableDiffusionPipeline,
    "img2img": StableDiffusionImg2ImgPipeline,
    "inpaint": StableDiffusionInpaintPipeline,
}


def tiny_sd_pipeline(
    kind: str = "txt2img",
    prediction_type: str = "epsilon",
    scheduler: SchedulerSpec | None = None,
    seed: int = 0,
    in_channels: int = 4,
):
    """A tiny Stable Diffusion pipeline: ``kind`` is "txt2img", "img2img" or "inpaint".

    Images are 16x16 pixels (8x8 latents). The inpainting pipeline uses a 4-channel UNet by default,
    the path where the pipeline re-noises the known region with ``scheduler.add_noise`` after every step;
    pass ``in_channels=9`` for the inpainting-UNet path.
    """
    if kind not in _SD_PIPELINES:
        raise ValueError(f"kind must be one of {list(_SD_PIPELINES)}, got {kind!r}.")
    components = tiny_sd_components(prediction_type, in_channels=in_channels, seed=seed)
    return _install(_SD_PIPELINES[kind](**components), scheduler)


# --------------------------------------------------------------------------------------------------
# flow matching: Stable Diffusion 3 and Flux
# --------------------------------------------------------------------------------------------------
def _tiny_t5(tokenizer: CLIPTokenizer, seed: int) -> T5EncoderModel:
    """A 2-layer T5 encoder (d_model = TEXT_HIDDEN_SIZE) over the tiny byte-level vocabulary: SD3's and Flux's
    third / second text encoder. Its tokenizer is :func:`tiny_clip_tokenizer` (the pipelines only call the
    tokenizer and decode its ids), since a T5 sentencepiece model cannot be built offline."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_HIDDEN_SIZE,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return _seeded(seed, lambda: T5EncoderModel(config)).eval()


def _flow_vae(seed: int, latent_channels: int, **extra: Any) -> AutoencoderKL:
    """A 2-level ``AutoencoderKL`` without quant convs, with SD3-style latent shift and scale."""
    return _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=latent_channels,
            **TINY_BLOCKS,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            sample_size=2 * LATENT_SIZE,
            use_quant_conv=False,
            use_post_quant_conv=False,
            **extra,
        ),
    )


_SD3_PIPELINES = {
    "txt2img": StableDiffusion3Pipeline,
    "img2img": StableDiffusion3Img2ImgPipeline,
    "inpaint": StableDiffusion3InpaintPipeline,
}
_FLUX_PIPELINES = {"txt2img": FluxPipeline, "img2img": FluxImg2ImgPipeline, "inpaint": FluxInpaintPipeline}


def tiny_sd3_pipeline(kind: str = "txt2img", scheduler: SchedulerSpec | None = None, seed: int = 0):
    """A tiny Stable Diffusion 3 pipeline (``kind``: "txt2img", "img2img" or "inpaint"): an
    ``SD3Transformer2DModel`` with one joint block, two tiny CLIP encoders with projection and a tiny T5, a
    16-channel VAE (as SD3's); 16x16 images. The default scheduler is SD3's ``FlowMatchEulerDiscreteScheduler(shift=3)``."""
    if kind not in _SD3_PIPELINES:
        raise ValueError(f"kind must be one of {list(_SD3_PIPELINES)}, got {kind!r}.")
    tokenizer = tiny_clip_tokenizer()
    clip = _clip_text_config(tokenizer, projection_dim=TEXT_PROJECTION_DIM)
    transformer = _seeded(
        seed,
        lambda: SD3Transformer2DModel(
            sample_size=LATENT_SIZE,
            patch_size=1,
            in_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=TEXT_HIDDEN_SIZE,
            caption_projection_dim=32,
            pooled_projection_dim=2 * TEXT_PROJECTION_DIM,
            out_channels=16,
            pos_embed_max_size=2 * LATENT_SIZE,
        ),
    )
    components = {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER_CONFIG),
        "vae": _flow_vae(seed, 16, shift_factor=0.0609, scaling_factor=1.5035),
        "text_encoder": _seeded(seed, lambda: CLIPTextModelWithProjection(clip)).eval(),
        "tokenizer": tokenizer,
        "text_encoder_2": _seeded(seed + 1, lambda: CLIPTextModelWithProjection(clip)).eval(),
        "tokenizer_2": tiny_clip_tokenizer(),
        "text_encoder_3": _tiny_t5(tokenizer, seed),
        "tokenizer_3": tiny_clip_tokenizer(),
    }
    return _install(_SD3_PIPELINES[kind](**components), scheduler)


def tiny_flux_pipeline(kind: str = "txt2img", scheduler: SchedulerSpec | None = None, seed: int = 0):
    """A tiny Flux.1 pipeline (``kind``: "txt2img", "img2img" or "inpaint"): a ``FluxTransformer2DModel`` with
    one double and one single block and guidance embedding (as FLUX.1-dev), a tiny CLIP and T5, a 4-channel
    VAE packed 2x2 into 16-channel tokens; 16x16 images. The default scheduler is Flux.1-dev's
    ``FlowMatchEulerDiscreteScheduler`` (dynamic shifting)."""
    if kind not in _FLUX_PIPELINES:
        raise ValueError(f"kind must be one of {list(_FLUX_PIPELINES)}, got {kind!r}.")
    tokenizer = tiny_clip_tokenizer()
    transformer = _seeded(
        seed,
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TEXT_HIDDEN_SIZE,
            pooled_projection_dim=TEXT_HIDDEN_SIZE,
            guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        ),
    )
    components = {
        "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
        "vae": _flow_vae(seed, 4, shift_factor=0.1159, scaling_factor=0.3611),
        "text_encoder": _seeded(seed, lambda: CLIPTextModel(_clip_text_config(tokenizer))).eval(),
        "tokenizer": tokenizer,
        "text_encoder_2": _tiny_t5(tokenizer, seed),
        "tokenizer_2": tiny_clip_tokenizer(),
        "transformer": transformer,
    }
    pipe = _FLUX_PIPELINES[kind](**components)
    # FluxPipeline's default image is default_sample_size * vae_scale_factor pixels, with default_sample_size
    # hard-coded to 128 (not in any config): 16 x 16 here, as built (a reloaded copy needs height / width)
    pipe.default_sample_size = LATENT_SIZE
    return _install(pipe, scheduler)


# --------------------------------------------------------------------------------------------------
# Stable Diffusion XL base + refiner
# --------------------------------------------------------------------------------------------------
def _sdxl_unet(cross_attention_dim: int, num_time_ids: int, seed: int) -> UNet2DConditionModel:
    """An SDXL-style UNet: "text_time" micro-conditioning on ``num_time_ids`` scalars + pooled text."""
    add_embedding_dim = num_time_ids * ADDITION_TIME_EMBED_DIM + TEXT_PROJECTION_DIM
    return _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=LATENT_SIZE,
            in_channels=4,
            out_channels=4,
            **TINY_BLOCKS,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=add_embedding_dim,
            transformer_layers_per_block=(1, 1),
        ),
    )


def _sdxl_scheduler() -> EulerDiscreteScheduler:
    """SDXL 1.0's scheduler config (Euler, "leading" spacing, ``steps_offset=1``)."""
    return EulerDiscreteScheduler(
        **SD_BETAS,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def tiny_sdxl_pipelines(
    scheduler: SchedulerSpec | None = None, seed: int = 0
) -> tuple[StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline]:
    """A tiny SDXL base and refiner sharing the VAE, ``text_encoder_2`` and ``tokenizer_2``.

    The base has two text encoders (``CLIPTextModel`` and ``CLIPTextModelWithProjection``, so
    ``cross_attention_dim = 2 * 32``) and 6 micro-conditioning ids; the refiner has only the second
    encoder and, with ``requires_aesthetics_score=True``, 5 ids. Use them for the ensemble-of-experts
    hand-off: ``base(..., denoising_end=f, output_type="latent")`` then
    ``refiner(..., image=latents, denoising_start=f)``.

    Each pipeline gets its own scheduler instance (a given instance goes to the base, the refiner gets
    ``type(instance).from_config(instance.config)``); both default to SDXL's Euler config.
    """
    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer()
    text_encoder = _seeded(seed, lambda: CLIPTextModel(_clip_text_config(tokenizer))).eval()
    text_encoder_2 = _seeded(
        seed + 1,
        lambda: CLIPTextModelWithProjection(
            _clip_text_config(tokenizer_2, projection_dim=TEXT_PROJECTION_DIM)
        ),
    ).eval()
    vae = _tiny_vae(seed)

    # what base and refiner share: the VAE, the second text encoder and its tokenizer, no watermark
    shared = dict(
        vae=vae,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    base = StableDiffusionXLPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_sdxl_unet(2 * TEXT_HIDDEN_SIZE, num_time_ids=6, seed=seed),
        scheduler=_sdxl_scheduler(),
        **shared,
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        text_encoder=None,
        tokenizer=None,
        unet=_sdxl_unet(TEXT_HIDDEN_SIZE, num_time_ids=5, seed=seed + 2),
        scheduler=_sdxl_scheduler(),
        requires_aesthetics_score=True,
        **shared,
    )
    _install(base, scheduler)
    if isinstance(scheduler, SchedulerMixin):
        scheduler = type(scheduler).from_config(scheduler.config)
    _install(refiner, scheduler)
    return base, refiner


def tiny_edm_sdxl_pipeline(
    scheduler: SchedulerSpec | None = None, seed: int = 0, **edm_config: Any
) -> StableDiffusionXLPipeline:
    """The tiny SDXL base of :func:`tiny_sdxl_pipelines` with an ``EDMEulerScheduler`` (``edm_config`` its
    options), as Playground v2.5 ships SDXL with an EDM scheduler; ``scheduler`` is then built from that
    EDM config."""
    base, _ = tiny_sdxl_pipelines(seed=seed)
    base.scheduler = EDMEulerScheduler(**edm_config)
    return _install(base, scheduler)


class NoGuardrail(torch.nn.Module):
    """A stand-in for Cosmos' safety checker (``cosmos_guardrail`` is a large optional dependency): passes every
    prompt and video. For the tiny offline pipeline only."""

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))  # gives the pipeline a device and dtype to read

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, video):
        return video


def tiny_cosmos2_pipeline(
    scheduler: SchedulerSpec | None = None, seed: int = 0
) -> Cosmos2TextToImagePipeline:
    """A tiny Cosmos-Predict2 text-to-image pipeline (2-layer ``CosmosTransformer3DModel``, tiny Wan VAE, T5
    over the byte-level vocabulary) with Cosmos' ``FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)``,
    into whose config the pipeline registers its EDM keys; ``scheduler`` is then built from that config. The
    padding-mask channel is off (it needs torchvision)."""
    tokenizer = tiny_clip_tokenizer()
    transformer = _seeded(
        seed,
        lambda: CosmosTransformer3DModel(
            in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2,
            mlp_ratio=2, text_embed_dim=TEXT_HIDDEN_SIZE, adaln_lora_dim=4, max_size=(4, 32, 32),
            patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False,
            extra_pos_embed_type="learnable",
        ),
    ).eval()  # fmt: skip
    vae = _seeded(
        seed,
        lambda: AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        ),
    ).eval()
    pipe = Cosmos2TextToImagePipeline(
        text_encoder=_tiny_t5(tokenizer, seed + 1),
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
        safety_checker=NoGuardrail(),
    )
    return _install(pipe, scheduler)


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def tiny_image(seed: int = 0, size: int = 2 * LATENT_SIZE) -> Image.Image:
    """A random RGB ``size x size`` PIL image (deterministic given ``seed``), e.g. for img2img."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def tiny_mask(size: int = 2 * LATENT_SIZE) -> Image.Image:
    """An inpainting mask: white (repaint) on the right half, black (keep) on the left."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, size // 2 :] = 255
    return Image.fromarray(mask)


def accelerate_launch(
    cli_args: Sequence[str], num_processes: int = 2, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``diffusers-geo <cli_args>`` under ``accelerate launch --multi_gpu --num_processes N`` (offline,
    one thread per process) and return the finished process (text stdout/stderr). On a CPU-only machine
    ``--multi_gpu`` spawns the processes (torch.distributed.run) and they talk over gloo; accelerate's
    ``--cpu`` would start a single process unless MPI is configured."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "-m", "diffusers_geo.cli", *cli_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------------
# video: CogVideoX (VP, v-prediction, zero terminal SNR) and LTX-Video conditioning (flow matching)
# --------------------------------------------------------------------------------------------------
#: CogVideoX-2b's scheduler config (``THUDM/CogVideoX-2b``, ``CogVideoXDDIMScheduler``): SNR shift 3, zero SNR
COGVIDEOX_2B_SCHEDULER_CONFIG: dict[str, Any] = {
    **SD_BETAS,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 3.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}
#: CogVideoX-5b's (``CogVideoXDPMScheduler``): the same without the SNR shift
COGVIDEOX_5B_SCHEDULER_CONFIG: dict[str, Any] = {**COGVIDEOX_2B_SCHEDULER_CONFIG, "snr_shift_scale": 1.0}
#: LTX-Video 0.9.x's FlowMatchEulerDiscreteScheduler config (shift_terminal 0.1, no dynamic shifting)
LTX_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}


def tiny_cogvideox_pipeline(
    scheduler: SchedulerSpec | None = None, config: str = "2b", seed: int = 0
) -> CogVideoXPipeline:
    """A tiny ``CogVideoXPipeline``: a one-layer ``CogVideoXTransformer3DModel`` (4 latent channels, patch 2), a
    4-level ``AutoencoderKLCogVideoX`` of 8 channels and a tiny T5 with the byte-level tokenizer. ``config``
    picks the scheduler of CogVideoX-"2b" (``CogVideoXDDIMScheduler``, SNR shift 3) or "5b"
    (``CogVideoXDPMScheduler``). Run it with ``height=16, width=16, num_frames=5`` (2 latent frames of 2x2
    tokens each) and ``max_sequence_length=16``."""
    if config not in ("2b", "5b"):
        raise ValueError(f"config must be '2b' or '5b', got {config!r}.")
    tokenizer = tiny_clip_tokenizer()
    transformer = _seeded(
        seed,
        lambda: CogVideoXTransformer3DModel(
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=TEXT_HIDDEN_SIZE,
            num_layers=1,
            sample_width=2,
            sample_height=2,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=16,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        ),
    )
    if config == "2b":
        own = CogVideoXDDIMScheduler(**COGVIDEOX_2B_SCHEDULER_CONFIG)
    else:
        own = CogVideoXDPMScheduler(**COGVIDEOX_5B_SCHEDULER_CONFIG)
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=_tiny_t5(tokenizer, seed),
        vae=vae,
        transformer=transformer,
        scheduler=own,
    )
    return _install(pipe, scheduler)


def tiny_ltx_condition_pipeline(
    scheduler: SchedulerSpec | None = None, seed: int = 0
) -> LTXConditionPipeline:
    """A tiny ``LTXConditionPipeline``: a one-layer ``LTXVideoTransformer3DModel`` (8 latent channels), an
    ``AutoencoderKLLTXVideo`` with 4x spatial / 4x temporal compression and a tiny T5 with the byte-level
    tokenizer; LTX-Video's ``FlowMatchEulerDiscreteScheduler``. Run it with ``height=32, width=32,
    num_frames=5`` (2 latent frames of 8x8 tokens) and ``max_sequence_length=16``; ``image=`` conditions on a first frame (its tokens then
    sit at timestep 0, ``per_token_timesteps``)."""
    tokenizer = tiny_clip_tokenizer()
    transformer = _seeded(
        seed,
        lambda: LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=4,
            attention_head_dim=8,
            cross_attention_dim=32,
            num_layers=1,
            caption_channels=TEXT_HIDDEN_SIZE,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLLTXVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        ),
    )
    pipe = LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=_tiny_t5(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return _install(pipe, scheduler)

"""The diffusers contract, written once: :class:`GeoScheduler` and the :func:`scheduler_config` decorator.

A concrete scheduler subclasses :class:`GeoScheduler`, declares only its own hyper-parameters in an
``__init__`` decorated with :func:`scheduler_config`, and implements :meth:`GeoScheduler.solver_step`,
a step of its solver in sigma coordinates. Everything a diffusers pipeline relies on lives here:

* config keys mirroring the built-ins and ``_compatibles`` (``X.from_config(pipe.scheduler.config)``);
* the VP interface (``init_noise_sigma = 1``, identity ``scale_model_input``, VP ``add_noise``) that every
  pipeline, ``DDPMPipeline`` included, handles; ``step`` maps ``x -> y = x / alpha`` and back;
* ``set_timesteps`` with spacings, Karras/exponential/beta sigmas, custom ``timesteps=`` / ``sigmas=``;
* ``begin_index`` / ``step_index`` for img2img, inpainting and the SDXL hand-off;
* prediction-type conversion, dtype/device handling, clear errors;
* ODE-Jump (``jump_sigma`` / ``jump_step``): end any scheduler's run early with the denoiser output.

A step of the solver may take more than one model call (Heun-type two-stage steps): such a subclass
returns the noise level of every call from :meth:`GeoScheduler.call_sigmas`, and ``self.sigmas`` /
``self.timesteps`` then list one entry per model call, in diffusers' order-2 layout.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import diffusers
import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import EDM, PREDICTION_TYPES, DiscreteVP, FlowMatching
from ..schedules import (
    BETA_SCHEDULES,
    TIMESTEP_SPACINGS,
    append_terminal,
    betas_from_alphas_cumprod,
    clamp_zero_terminal_snr,
    edm_sigmas,
    make_betas,
    rescale_zero_terminal_snr,
    respace_sigmas,
    shift_snr,
    spaced_timesteps,
    training_sigmas,
)
from ..schedules.flow import (
    TIME_SHIFT_TYPES,
    dpm_flow_fractions,
    flow_match_fractions,
    flow_sigma,
    noise_fraction,
    shift_flow_fractions,
    trailing_fractions,
)
from ..schedules.ode_jump import OdeJump, ode_jump
from .options import Betas, Bool, Check, Choice, Int, Real

FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
SIGMA_SCHEDULES = ("karras", "exponential")
#: "pipeline": an EDM model whose pipeline applies c_in / c_skip / c_out itself and hands step eps (Cosmos)
PRECONDITIONINGS = ("none", "edm", "pipeline")
#: what an EDM config (``preconditioning="edm"``) records where the option is not given: diffusers' EDM defaults
EDM_DEFAULTS: dict[str, Any] = {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_schedule": "karras", "rho": 7.0}
_BETA = Real(0.0, 1.0, low_open=True, high_open=True)
_SIGMA = Real(0.0, low_open=True, optional=True, hint="(None: the trained end)")

logger = logging.get_logger(__name__)


@dataclass
class GeoSchedulerOutput(BaseOutput):
    """Output of :meth:`GeoScheduler.step`.

    Args:
        prev_sample: the sample at the next noise level, in the pipeline's (VP) coordinates.
        pred_original_sample: the data prediction the step used (for previews and callbacks).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


NoiseSource = Callable[[], torch.Tensor]


def scheduler_config(init: Callable) -> Callable:
    """Register a subclass ``__init__`` with the shared config keys of :class:`GeoScheduler`.

    The subclass writes ``def __init__(self, <its own keyword arguments>, **base_config)`` and passes
    ``**base_config`` to ``super().__init__``. This decorator gives the function the explicit merged
    signature (its own arguments, then every base key as keyword-only), so ``inspect.signature`` — which
    ``from_config``/``from_pretrained`` and ``register_to_config`` read — lists every config key and no
    ``**kwargs``: a saved config round-trips and an unknown argument is a ``TypeError``.

    Every value given is checked against the ``options`` declarations of the class and its bases (see
    :mod:`~diffusers_geo.schedulers.options`) before ``__init__`` runs, and the normalised value is what
    ``__init__`` receives and the config records.
    """
    own = [
        p
        for name, p in inspect.signature(init).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    base = [
        p.replace(kind=p.KEYWORD_ONLY)
        for name, p in inspect.signature(GeoScheduler.__init__).parameters.items()
        if name != "self"
    ]
    clash = {p.name for p in own} & {p.name for p in base}
    if clash:
        raise TypeError(f"{init.__qualname__} redefines shared config keys {sorted(clash)}")

    init.__signature__ = inspect.Signature(own + base)
    registered = register_to_config(init)
    positional = [p.name for p in own[1:]]  # after self
    keys = positional + [p.name for p in base]

    @functools.wraps(registered)
    def checked_init(self, *args, **kwargs):
        if len(args) > len(positional):
            raise TypeError(
                f"{type(self).__name__} takes its options as keywords after the first {len(positional)}."
            )
        given = dict(zip(positional, args, strict=False))
        for name, value in kwargs.items():
            if name in given:
                raise TypeError(f"{type(self).__name__} got two values for {name}.")
            if not name.startswith("_") and name not in keys:
                raise TypeError(unknown_options(type(self).__name__, [name], keys))
            given[name] = value
        if (
            given.get("prediction_type") == "flow_prediction"
        ):  # the class's flow defaults, recorded in the config
            given = {**type(self).flow_defaults, **given}
        if given.get("preconditioning") in ("edm", "pipeline"):  # an EDM model records its schedule
            given = {**EDM_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        checks = type(self).option_checks()
        for name, value in given.items():
            if name in checks:
                given[name] = checks[name](name, value)
        registered(self, **given)

    checked_init.__signature__ = init.__signature__
    return checked_init


def unknown_options(owner: str, names: Sequence[str], valid: Sequence[str]) -> str:
    """The error for option ``names`` that ``owner`` does not take: each with its closest valid name, and the
    valid ones."""
    guesses = {name: difflib.get_close_matches(name, valid, n=1) for name in names}
    if len(names) == 1:
        hints = "".join(f" Did you mean {g[0]!r}?" for g in guesses.values() if g)
    else:
        hints = "".join(f" Did you mean {g[0]!r} for {n!r}?" for n, g in guesses.items() if g)
    return f"{owner} has no option {', '.join(map(repr, names))}.{hints} Valid options: {sorted(valid)}."


def is_flow_match_config(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is a ``FlowMatch*`` scheduler's (saved ones name their class; in memory they are
    the only diffusers configs with a ``shift`` and no ``prediction_type``)."""
    origin = config.get("_class_name")
    if origin is not None:
        return isinstance(origin, str) and origin.startswith("FlowMatch")
    return "shift" in config and "prediction_type" not in config


def is_edm_config(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is an EDM scheduler's (``EDMEulerScheduler``, ``EDMDPMSolverMultistepScheduler``):
    saved ones name their class; in memory they are the configs with ``sigma_data``, ``sigma_schedule`` and
    ``rho`` (the consistency-model schedulers have no ``sigma_schedule``). A diffusers-geo config says so in its
    ``preconditioning`` key."""
    origin = config.get("_class_name")
    if isinstance(origin, str) and origin.startswith("EDM"):
        return True
    if origin is None:
        return all(k in config for k in ("sigma_data", "sigma_schedule", "rho"))
    return False


def _from_flow_match_class(config: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """A ``FlowMatch*`` scheduler's config in our terms: those classes have no ``prediction_type`` (their
    model is always a velocity model), so it becomes ``"flow_prediction"``. ``invert_sigmas=True`` (a model
    trained with ``s`` reversed) is refused; ``stochastic_sampling`` is that class's own sampler option and,
    like every other scheduler's own options, is not taken over."""
    if config.get("invert_sigmas"):
        raise ValueError(
            f"{owner} cannot serve a config with invert_sigmas=True (a model trained with the noise fraction "
            "reversed, s -> 1 - s): keep the pipeline's FlowMatchEulerDiscreteScheduler for it."
        )
    return {**config, "prediction_type": "flow_prediction"}


def _source_keys(cls: type, config: Mapping[str, Any], origin: str | None) -> tuple[set[str] | None, str]:
    """The config keys of the scheduler class the config comes from: the class named ``origin`` (a diffusers
    class or one of ours); for a config without a class name (an in-memory diffusers config), the
    ``_compatibles`` classes that take every key of it that ``cls`` does not (all of them if none does);
    ``None`` for a class this process does not know; and the source's name for messages."""
    if origin is None:
        classes = [c for c in cls._get_compatibles() if isinstance(c, type)]
        mine = set(inspect.signature(cls.__init__).parameters)
        strange = {k for k in config if not k.startswith("_") and k not in mine}
        fits = [c for c in classes if strange <= set(inspect.signature(c.__init__).parameters)]
        if len(fits) == 1:
            origin = fits[0].__name__
        classes = fits or classes
    else:
        ours = {c.__name__: c for c in _subclasses(GeoScheduler)}
        found = ours.get(origin) or getattr(diffusers, origin, None)
        if not isinstance(found, type):
            return None, origin
        classes = [found]
    keys = {name for c in classes for name in inspect.signature(c.__init__).parameters}
    return keys, origin or "another scheduler"


def _subclasses(klass: type) -> list[type]:
    return [c for sub in klass.__subclasses__() for c in (sub, *_subclasses(sub))]


def _without_foreign_options(
    cls: type, config: dict[str, Any], origin: str | None, kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """``config`` of another scheduler without the options of ``cls`` that may be the source's own.

    An option of ours the source class takes too (DPM-Solver's ``solver_order``, EDM's ``sigma_data``) is
    that scheduler's setting, not a choice for ours: it is dropped (our default applies), with a warning
    naming the keyword that sets it, unless it equals our default or the keyword is given. One the source
    class does not take is kept: only the caller can have put it there. For a source class this process
    does not know, every option of ours is treated as possibly its own."""
    own = set(inspect.signature(cls.__init__).parameters) - set(
        inspect.signature(GeoScheduler.__init__).parameters
    )
    theirs, source = _source_keys(cls, config, origin)
    defaults = set(config.get("_use_default_values", []))
    dropped = {k: v for k, v in config.items() if k in own and (theirs is None or k in theirs)}
    noted = {
        k: v
        for k, v in dropped.items()
        if k not in defaults
        and k not in kwargs
        and v != inspect.signature(cls.__init__).parameters[k].default
    }
    if noted:
        given = ", ".join(f"{k}={v!r}" for k, v in noted.items())
        logger.warning(
            f"{cls.__name__}.from_config: {given} in the config of {source} is that scheduler's own setting and "
            f"is not taken (the {cls.__name__} default applies). To use it, pass it as a keyword: "
            f"{cls.__name__}.from_config(config, {given})."
        )
    return {k: v for k, v in config.items() if k not in dropped}


def _from_cosmos_class(config: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """The ``FlowMatchEulerDiscreteScheduler`` config of Cosmos-Predict2 (``use_karras_sigmas=True``, and the
    ``sigma_min`` / ``sigma_max`` / ``sigma_data`` / ``final_sigmas_type`` its pipeline registers) in our terms.
    That pipeline treats the scheduler as a VE Euler solver: it passes the ramp ``linspace(0, 1, N)`` as
    ``sigmas`` (FlowMatchEuler turns it into Karras levels between the registered ends, rho = 7, ignoring the
    shift), reads ``scheduler.sigmas[i]`` as EDM noise levels, preconditions the network itself and hands
    ``step`` the noise ``(x - D) / sigma``. So it is an EDM model with ``preconditioning="pipeline"`` and
    ``prediction_type="epsilon"``; the flow keys, which do not change that schedule, are not taken over, and
    dynamic shifting (which would need a ``mu`` the pipeline never passes) is refused."""
    if config.get("use_dynamic_shifting"):
        raise ValueError(
            f"The Cosmos-style config (a FlowMatch config with sigma_data) has use_dynamic_shifting=True, which "
            f"its pipeline never serves (no mu is passed): {owner} cannot serve it. Set use_dynamic_shifting=False."
        )
    if config.get("use_exponential_sigmas"):
        schedule = "exponential"
    elif config.get("use_karras_sigmas"):
        schedule = "karras"
    else:
        raise ValueError(
            "The Cosmos-style config (a FlowMatch config with sigma_data) has neither use_karras_sigmas nor "
            "use_exponential_sigmas: its pipeline's sigmas=linspace(0, 1, N) then give no EDM schedule. Cosmos "
            "ships use_karras_sigmas=True; set it."
        )
    if config.get("sigma_min") is None or config.get("sigma_max") is None:
        raise ValueError(
            f"The Cosmos-style config has sigma_min={config.get('sigma_min')} / sigma_max={config.get('sigma_max')}: "
            "give both ends of the EDM range (Cosmos-Predict2 registers 0.002 / 80)."
        )
    flow = set(inspect.signature(GeoScheduler.__init__).parameters) & {
        "shift", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len", "shift_terminal",
        "time_shift_type", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing",
    }  # fmt: skip
    kept = {k: v for k, v in config.items() if k not in flow}
    return {**kept, "preconditioning": "pipeline", "prediction_type": "epsilon", "sigma_schedule": schedule}


def _from_edm_class(config: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """An EDM scheduler's config in our terms: its keys are ours already, and ``preconditioning="edm"``
    records the family (so a saved config reloads as EDM). ``prediction_type="sample"`` (which
    ``EDMDPMSolverMultistepScheduler`` accepts but its ``precondition_outputs`` refuses) is refused by name;
    its ``thresholding`` keys are the shared ones (:meth:`GeoScheduler.clip_denoised`); the DPM-Solver's other
    options are its own sampler's and, like every other scheduler's own options, are not taken over."""
    origin = config.get("_class_name") or "an EDM scheduler"
    if config.get("prediction_type") == "sample":
        raise ValueError(
            f"The config of {origin} has prediction_type='sample', which diffusers' EDM preconditioning does not "
            f"define (its precondition_outputs takes 'epsilon' or 'v_prediction'): {owner} cannot serve it. Set "
            "prediction_type to what the network predicts."
        )
    return {**config, "preconditioning": "edm"}


#: config keys of diffusers' schedulers that say what the *model* expects and that no diffusers-geo scheduler
#: implements, each with the values that need nothing (any other value is refused or warned about by name)
UNSERVED_MODEL_KEYS: dict[str, tuple[Any, ...]] = {
    # EulerDiscreteScheduler: "continuous" calls the model at 0.25 log(sigma) instead of a training timestep
    "timestep_type": ("discrete",),
    # DDPM / DPM-Solver: "learned" / "learned_range" models output a variance beside the prediction
    "variance_type": (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"),
    # FlowMatch schedulers: a model trained with s reversed (refused in _from_flow_match_class)
    "invert_sigmas": (False,),
}


def _report_foreign_options(
    config: Mapping[str, Any], owner: str, origin: str | None, accepted: set[str]
) -> None:
    """Name what ``owner`` does not take over from another scheduler's config (only the shared model and
    schedule keys come along; the rest stays in the hidden config, so switching back loses nothing).

    The rule (``docs/pipelines.md``): a model key no diffusers-geo scheduler serves
    (:data:`UNSERVED_MODEL_KEYS`) with a value that changes what the model expects is an error
    (``variance_type`` of a learned variance: a warning, since the pipeline may split the output); every
    other key is that scheduler's own sampler option (``solver_order``, ``stochastic_sampling``,
    ``set_alpha_to_one``, ...), left behind and named in one warning, never dropped silently."""
    source = origin or "the other scheduler"
    for key, neutral in UNSERVED_MODEL_KEYS.items():
        value = config.get(key, neutral[0])
        if value in neutral:
            continue
        if key == "variance_type":
            logger.warning(
                f"{owner}: variance_type={value!r} of {source}'s config is a model that predicts its variance "
                "too; diffusers-geo schedulers read only the prediction, so pass model_output[:, :C] (the first "
                "half of the channels) to step."
            )
        else:
            raise ValueError(
                f"{owner} cannot serve {key}={value!r} of {source}'s config: no diffusers-geo scheduler "
                f"implements it (only {key}={neutral[0]!r}). Keep {source} for this model."
            )
    left = {
        k: v
        for k, v in config.items()
        if not k.startswith("_") and k not in accepted and k not in UNSERVED_MODEL_KEYS
    }
    if left:
        listed = ", ".join(f"{k}={v!r}" for k, v in sorted(left.items()))
        logger.warning(
            f"{owner}.from_config: {source}'s own sampler options are not taken over (they set that sampler, "
            f"not the model): {listed}. Pass {owner}'s own options to change how it samples."
        )


class GeoScheduler(SchedulerMixin, ConfigMixin):
    """Shared base of every diffusers-geo scheduler (not used directly).

    Args:
        num_train_timesteps: number of diffusion steps the model was trained with.
        beta_start, beta_end, beta_schedule: training betas ("linear", "scaled_linear", "squaredcos_cap_v2").
        trained_betas: explicit betas, overriding the three above.
        prediction_type: what the model predicts: "epsilon", "v_prediction" or "sample".
        timestep_spacing: "linspace", "leading" or "trailing" (Lin et al., arXiv 2305.08891, Table 2).
        steps_offset: added to "leading" timesteps (Stable Diffusion 1.x uses 1).
        rescale_betas_zero_snr: rescale betas to zero terminal SNR (ibid., Alg. 1); use with v-prediction
            and "trailing" spacing. The infinite terminal sigma is clamped like diffusers' Euler (abar = 2**-24).
        use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas: respace the sigmas between
            ``sigma_min`` and ``sigma_max`` (at most one may be set; beta needs scipy).
        final_sigmas_type: "zero" (the last step returns the data prediction) or "sigma_min" (stop at
            the noise level of training timestep 0).
        sigma_min, sigma_max: override the ends of Karras/exponential/beta schedules.
        jump_sigma: ODE-Jump (Chen et al., arXiv 2305.19947, §3 and Prop. 1): cut the schedule at its first
            noise level <= ``jump_sigma`` and end the run there by returning the denoiser output (the Euler
            step to sigma = 0 lands exactly on it), saving every later model call. Must lie between the
            smallest and the largest noise level at which the schedule calls the model.
        jump_step: the same, naming the solver step (0-based) to jump from instead of a noise level.
            After ``set_timesteps``, ``self.ode_jump`` (an :class:`OdeJump`) reports where the run ends
            and how many model calls it saves.
        preconditioning: "edm" for an EDM-preconditioned model (Karras et al. 2022;
            ``X.from_config`` of an ``EDMEulerScheduler`` / ``EDMDPMSolverMultistepScheduler`` config sets it,
            :class:`~diffusers_geo.parameterization.EDM`): ``sigma_min`` / ``sigma_max`` are then the trained
            range (default 0.002 / 80), ``timesteps`` are ``c_noise`` and ``scale_model_input`` scales by ``c_in``.
            "pipeline": the same model, but its pipeline preconditions the network itself and hands ``step`` the
            noise ``(x - D) / sigma`` (Cosmos-Predict2; from its FlowMatch config with ``sigma_data``).
        sigma_data: the data's standard deviation: EDM's ``c_skip`` / ``c_out`` / ``c_in``, and the geometric
            Heun corrector's first-order move (EDM's 0.5).
        sigma_schedule, rho: an EDM model's schedule for ``num_inference_steps``: "karras" (with ``rho``) or
            "exponential" between ``sigma_min`` and ``sigma_max``, as its EDM scheduler builds it.
        snr_shift_scale: CogVideoX's SNR shift of the training schedule, ``abar' = abar / (k + (1 - k) abar)``
            (SNR divided by ``k``, :func:`~diffusers_geo.schedules.shift_snr`), applied before the zero-SNR
            rescaling as ``CogVideoXDDIMScheduler`` does.
        clip_sample, clip_sample_range: clip the data prediction ``D`` to ``[-range, range]`` before the
            solver reads it (pixel models trained on images in [-1, 1]; DDIM's and DPM-Solver's option).
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen's dynamic thresholding of ``D``
            (Saharia et al., arXiv 2205.11487, Sec. 2.3): per sample, ``s`` = the ``ratio`` quantile of
            ``|D|`` clamped to ``[1, sample_max_value]``, then ``D <- clip(D, -s, s) / s``; wins over
            ``clip_sample`` as in diffusers.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1
    #: whether ``step`` draws noise (a stochastic sampler); subclasses with a noise option override it
    stochastic = False
    #: whether the step is the memoryless Euler/DDIM step, which alone can move tokens at their own noise
    #: levels (``step(..., per_token_timesteps=...)`` of LTXConditionPipeline) exactly
    serves_per_token_timesteps: ClassVar[bool] = False
    #: option defaults that differ on a flow-matching model, used where the option is not given (a FlowMatch
    #: config has no ``timestep_spacing``): "linspace" is FlowMatchEulerDiscreteScheduler's spacing,
    #: "trailing" Flux's sigmas; each class takes the values with the lower worst case on the benchmark suite
    #: and the trained flow model (docs/flow_matching.md)
    flow_defaults: ClassVar[dict[str, Any]] = {"timestep_spacing": "linspace"}

    #: what each shared config option accepts (subclasses add theirs in their own ``options``)
    options: ClassVar[dict[str, Check]] = {
        "num_train_timesteps": Int(low=2),
        "beta_start": _BETA,
        "beta_end": _BETA,
        "beta_schedule": Choice(BETA_SCHEDULES),
        "trained_betas": Betas(),
        "prediction_type": Choice(PREDICTION_TYPES),
        "timestep_spacing": Choice(TIMESTEP_SPACINGS),
        "steps_offset": Int(low=0),
        "rescale_betas_zero_snr": Bool(),
        "use_karras_sigmas": Bool(),
        "use_exponential_sigmas": Bool(),
        "use_beta_sigmas": Bool(),
        "final_sigmas_type": Choice(FINAL_SIGMAS_TYPES),
        "sigma_min": _SIGMA,
        "sigma_max": _SIGMA,
        "jump_sigma": Real(0.0, low_open=True, optional=True, hint="(a noise level of the schedule)"),
        "jump_step": Int(low=0, optional=True, hint="(a solver step index)"),
        "shift": Real(0.0, low_open=True, hint="(SD3 uses 3.0; 1 is no shift)"),
        "use_dynamic_shifting": Bool(),
        "base_shift": Real(optional=True),
        "max_shift": Real(optional=True),
        "base_image_seq_len": Int(low=1),
        "max_image_seq_len": Int(low=1),
        "shift_terminal": Real(0.0, 1.0, high_open=True, optional=True, hint="(the last noise fraction s)"),
        "time_shift_type": Choice(TIME_SHIFT_TYPES),
        "use_flow_sigmas": Bool(),
        "flow_shift": Real(0.0, low_open=True, hint="(1 is no shift)"),
        "preconditioning": Choice(
            PRECONDITIONINGS, hint="('edm': EDMEuler / EDMDPMSolver configs; 'pipeline': Cosmos)"
        ),
        "sigma_data": Real(0.0, low_open=True, hint="(0.5 for images in [-1, 1])"),
        "sigma_schedule": Choice(SIGMA_SCHEDULES),
        "rho": Real(0.0, low_open=True, hint="(EDM uses 7)"),
        "snr_shift_scale": Real(0.0, low_open=True, hint="(CogVideoX-2b uses 3.0; 1 is no shift)"),
        "clip_sample": Bool(),
        "clip_sample_range": Real(0.0, low_open=True, hint="(1 for images in [-1, 1])"),
        "thresholding": Bool(),
        "dynamic_thresholding_ratio": Real(0.0, 1.0, low_open=True, hint="(Imagen uses 0.995)"),
        "sample_max_value": Real(1.0, hint="(the largest threshold s; 1 is clipping to [-1, 1])"),
    }

    @classmethod
    def option_checks(cls) -> dict[str, Check]:
        """Every option declaration of this class and its bases (a subclass's own win)."""
        checks: dict[str, Check] = {}
        for klass in reversed(cls.__mro__):
            checks.update(vars(klass).get("options", {}))
        return checks

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        """diffusers' ``from_config``, with a ``TypeError`` naming the fix for what is not a config: a scheduler
        (pass its ``.config``), a path or Hub id (``from_pretrained`` loads those; diffusers' string form is
        deprecated and would go to the network) or any other non-mapping."""
        if isinstance(config, ConfigMixin):
            raise TypeError(
                f"{cls.__name__}.from_config got a {type(config).__name__} instance, not its config: pass "
                f"{cls.__name__}.from_config(pipe.scheduler.config)."
            )
        if not isinstance(config, Mapping):
            hint = (
                f" to load a saved folder or Hub repo, use {cls.__name__}.from_pretrained({config!r})"
                if isinstance(config, str)
                else ""
            )
            raise TypeError(
                f"{cls.__name__}.from_config takes a scheduler config (a mapping such as pipe.scheduler.config), "
                f"got {type(config).__name__} {config!r}: pass pipe.scheduler.config{';' + hint if hint else ''}."
            )
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' ``from_config`` rule, with two differences. A ``FlowMatch*`` scheduler's config is a
        flow-matching model's (``prediction_type="flow_prediction"``, see :func:`_from_flow_match_class`).
        A config of another class gives only the shared schedule keys (betas, flow shifts,
        spacing, offsets, sigma options, prediction type, zero-SNR, ...): an option of ours whose name another
        scheduler also uses (``solver_order`` of DPM-Solver, say) keeps our default unless the config comes
        from this very class, with a warning that names the keyword to pass (:func:`_without_foreign_options`);
        an option of ours that the source class does not have can only be the caller's
        (``{**pipe.scheduler.config, "quadrature": "riemann-200"}``) and is taken, as diffusers' own
        schedulers take it. The origin is the config's ``_class_name`` (every saved config and every
        diffusers-geo config has one); without it, a config with keys this class does not take is foreign
        (an in-memory config of a diffusers scheduler), one with only our keys is the caller's own. An EDM
        scheduler's config (:func:`is_edm_config`) keeps its EDM keys (``sigma_min``, ``sigma_max``,
        ``sigma_data``, ``sigma_schedule``, ``rho``, ``final_sigmas_type``, ``prediction_type``), which select
        the :class:`~diffusers_geo.parameterization.EDM` parameterisation."""
        flow_match = is_flow_match_config(config_dict)
        if flow_match and "sigma_data" in config_dict:  # the EDM keys Cosmos-Predict2's pipeline registers
            config_dict, flow_match = _from_cosmos_class(config_dict, cls.__name__), False
        elif flow_match:
            config_dict = _from_flow_match_class(config_dict, cls.__name__)
        elif is_edm_config(config_dict):
            config_dict = _from_edm_class(config_dict, cls.__name__)
        origin = config_dict.get("_class_name")
        accepted = set(inspect.signature(cls.__init__).parameters)
        if origin is None:
            foreign = any(not k.startswith("_") and k not in accepted for k in config_dict)
        else:
            foreign = origin != cls.__name__
        if (
            foreign
            and not flow_match
            and config_dict.get("prediction_type") == "flow_prediction"
            and not config_dict.get("use_flow_sigmas")
        ):
            raise ValueError(
                f"The config of {origin or 'another scheduler'} has prediction_type='flow_prediction' (a velocity "
                "model) with a variance-preserving (beta) schedule, which samples noise. For a flow-matching model "
                "take the config of its FlowMatch scheduler, or set use_flow_sigmas=True as DPM-Solver / UniPC "
                "do for flow models."
            )
        if foreign:
            config_dict = _without_foreign_options(cls, config_dict, origin, kwargs)
            _report_foreign_options(config_dict, cls.__name__, origin, accepted)
        return super().extract_init_dict(config_dict, **kwargs)

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | Sequence[float] | None = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        final_sigmas_type: str = "zero",
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        jump_sigma: float | None = None,
        jump_step: int | None = None,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        shift_terminal: float | None = None,
        time_shift_type: str = "exponential",
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        preconditioning: str = "none",
        sigma_data: float = 0.5,
        sigma_schedule: str = "karras",
        rho: float = 7.0,
        snr_shift_scale: float = 1.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
    ):
        # each value was checked on its own by the options above (scheduler_config); here: how they combine
        respacings = [
            name for name, on in _respacings(use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas)
        ]
        if len(respacings) > 1:
            raise ValueError(
                f"Only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be True; got "
                f"{respacings}. Set the others to False."
            )
        if use_beta_sigmas:
            try:
                import scipy  # noqa: F401  (optional dependency, only for beta sigmas)
            except ImportError as err:
                raise ImportError("use_beta_sigmas=True needs scipy: pip install scipy") from err
        if trained_betas is not None and len(trained_betas) != num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(trained_betas)} values but num_train_timesteps={num_train_timesteps}: "
                "give one beta per training timestep (or set num_train_timesteps to their number)."
            )
        if steps_offset >= num_train_timesteps:
            raise ValueError(
                f"steps_offset={steps_offset} must be below num_train_timesteps={num_train_timesteps} "
                "(Stable Diffusion 1.x uses 1, most models 0)."
            )
        if jump_sigma is not None and jump_step is not None:
            raise ValueError("Pass at most one of jump_sigma and jump_step (ODE-Jump), not both.")

        self._check_model_family()
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if snr_shift_scale != 1:  # CogVideoX: the SNR shift comes before the zero-SNR rescaling
            self.betas = betas_from_alphas_cumprod(
                shift_snr(torch.cumprod(1.0 - self.betas, 0), snr_shift_scale)
            )
        if rescale_betas_zero_snr:
            self.betas = rescale_zero_terminal_snr(self.betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if (
            rescale_betas_zero_snr
        ):  # finite, increasing sigma_max (diffusers' Euler clamp where it is monotone)
            self.alphas_cumprod = clamp_zero_terminal_snr(self.alphas_cumprod)
        if preconditioning in ("edm", "pipeline"):
            self.parameterization: DiscreteVP | FlowMatching | EDM = EDM(
                sigma_min, sigma_max, sigma_data, by_pipeline=preconditioning == "pipeline"
            )
            # what EDM pipelines multiply N(0, I) by: diffusers' EDM schedulers' sqrt(sigma_max^2 + 1) (Cosmos
            # multiplies by config.sigma_max itself)
            self.init_noise_sigma = (sigma_max**2 + 1) ** 0.5
        elif prediction_type == "flow_prediction":
            self.parameterization = FlowMatching(num_train_timesteps)
            self.init_noise_sigma = 1.0
        else:
            self.parameterization = DiscreteVP(_checked_training_sigmas(self.alphas_cumprod, trained_betas))
            _check_sigma_range(sigma_min, sigma_max, self.parameterization)
            self.init_noise_sigma = 1.0  # VP interface: pipelines start from unscaled N(0, I)
        # the config names its class in memory too (diffusers adds it only on saving): from_config of it
        # then knows our own options are meant for this class (see extract_init_dict)
        self.register_to_config(_class_name=type(self).__name__)

        self.num_inference_steps: int | None = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps)[::-1].astype(np.float32).copy())
        self.sigmas: torch.Tensor | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._nonfinite_step: torch.Tensor | None = None
        self.ode_jump: OdeJump | None = None
        self._schedule_given = False  # set_timesteps got `sigmas=` / `timesteps=` (see set_begin_index)
        #: the one observer of a run: called after every solver step with ``(y, D, sigma, sigma_next, y_next)``
        #: in sigma coordinates (the sample and denoiser output the step started from, and its result);
        #: GITS's teacher runs and TrajectoryRecorder set it, ``None`` when nobody watches
        self.on_step: Callable[[torch.Tensor, torch.Tensor, float, float, torch.Tensor], None] | None = None
        self.reset_state()

    @property
    def is_edm(self) -> bool:
        """Whether the model is EDM-preconditioned (``preconditioning="edm"``)."""
        return self.config.preconditioning in ("edm", "pipeline")

    @property
    def is_flow_matching(self) -> bool:
        """Whether the model is a flow-matching (velocity) model: ``prediction_type="flow_prediction"``."""
        return self.config.prediction_type == "flow_prediction"

    def _check_model_family(self) -> None:
        """The options of one model family must not be set for the other (a silent wrong image otherwise)."""
        cfg = self.config
        if self.is_edm:
            self._check_edm_options()
            return
        edm_only = {
            name: getattr(cfg, name) for name, default in (("sigma_schedule", "karras"), ("rho", 7.0))
        }
        edm_only = {k: v for k, v in edm_only.items() if v != EDM_DEFAULTS[k]}
        if edm_only:
            raise ValueError(
                f"{', '.join(f'{k}={v!r}' for k, v in edm_only.items())} is the schedule of an EDM model, but "
                "preconditioning='none' (not an EDM model). For an EDM model pass preconditioning='edm' "
                "(X.from_config of its EDMEulerScheduler / EDMDPMSolverMultistepScheduler config does this); "
                "otherwise use "
                "use_karras_sigmas / use_exponential_sigmas."
            )
        if cfg.prediction_type == "flow_prediction":
            if cfg.final_sigmas_type != "zero":
                raise ValueError(
                    f"final_sigmas_type={cfg.final_sigmas_type!r} does not apply to flow-matching models: their "
                    "schedule always ends at s = 0. Leave final_sigmas_type at 'zero'."
                )
            for name in ("sigma_min", "sigma_max"):
                if getattr(cfg, name) is not None:
                    raise ValueError(
                        f"{name}={getattr(cfg, name)} applies to variance-preserving models; a flow-matching "
                        "schedule is set by shift / use_dynamic_shifting / shift_terminal. Leave it None."
                    )
            if cfg.timestep_spacing == "leading":
                raise ValueError(
                    "timestep_spacing='leading' is not defined for flow-matching models: use 'trailing' (N steps "
                    "evenly spaced in t from s = 1, as Flux passes them) or 'linspace' "
                    "(FlowMatchEulerDiscreteScheduler's spacing)."
                )
            if cfg.snr_shift_scale != 1:
                raise ValueError(
                    f"snr_shift_scale={cfg.snr_shift_scale} shifts a variance-preserving (beta) schedule "
                    "(CogVideoX); a flow-matching schedule is shifted by `shift`. Leave snr_shift_scale at 1."
                )
            if cfg.rescale_betas_zero_snr:
                raise ValueError(
                    "rescale_betas_zero_snr=True applies to variance-preserving models (a flow-matching schedule "
                    "already reaches pure noise at s = 1). Leave it False."
                )
            # two diffusers conventions: FlowMatch schedulers shift by `shift`, DPM-Solver / UniPC with
            # use_flow_sigmas=True by `flow_shift`; a value for the other one would be silently unused
            unused, used = ("shift", "flow_shift") if cfg.use_flow_sigmas else ("flow_shift", "shift")
            if getattr(cfg, unused) != 1.0:
                raise ValueError(
                    f"{unused}={getattr(cfg, unused)} is unused with use_flow_sigmas={cfg.use_flow_sigmas}: the "
                    f"schedule is shifted by {used} (FlowMatch schedulers' `shift`; DPM-Solver / UniPC's "
                    f"`flow_shift` with use_flow_sigmas=True). Pass the shift as {used}."
                )
            if cfg.use_dynamic_shifting and cfg.time_shift_type == "linear" and cfg.use_flow_sigmas:
                raise ValueError(
                    "use_flow_sigmas=True with dynamic shifting takes time_shift_type='exponential' (as in "
                    "DPM-Solver / UniPC)."
                )
            return
        if cfg.use_flow_sigmas:
            raise ValueError(
                f"use_flow_sigmas=True is a flow-matching schedule, but prediction_type={cfg.prediction_type!r} "
                "is a variance-preserving model's: pass prediction_type='flow_prediction' for a flow model "
                "(SD3, Flux, Wan), or use_flow_sigmas=False."
            )
        set_flow = {
            name: getattr(cfg, name)
            for name, default in (("shift", 1.0), ("flow_shift", 1.0), ("use_dynamic_shifting", False))
            if getattr(cfg, name) != default
        }
        if cfg.shift_terminal is not None:
            set_flow["shift_terminal"] = cfg.shift_terminal
        if set_flow:
            raise ValueError(
                f"{', '.join(f'{k}={v}' for k, v in set_flow.items())} shift(s) a flow-matching schedule, but "
                f"prediction_type={cfg.prediction_type!r} is a variance-preserving model's. For a flow model "
                "(SD3, Flux) pass prediction_type='flow_prediction' (X.from_config(pipe.scheduler.config) of a "
                "FlowMatch scheduler does this), otherwise leave the flow options at their defaults."
            )

    def _check_edm_options(self) -> None:
        """An EDM model's schedule is set by sigma_min / sigma_max / sigma_schedule / rho: the options of the
        other families would be silently unused, so a value other than their default is refused by name."""
        cfg = self.config
        if cfg.preconditioning == "pipeline" and cfg.prediction_type != "epsilon":
            raise ValueError(
                f"preconditioning='pipeline' (the pipeline preconditions and hands step eps = (x - D) / sigma, as "
                f"Cosmos-Predict2 does) takes prediction_type='epsilon', got {cfg.prediction_type!r}."
            )
        if cfg.prediction_type not in EDM.prediction_types:
            raise ValueError(
                f"prediction_type={cfg.prediction_type!r} is not an EDM model's: diffusers' EDM preconditioning "
                f"takes {list(EDM.prediction_types)}. Set prediction_type to what the network predicts."
            )
        if not cfg.sigma_min < cfg.sigma_max:
            raise ValueError(
                f"sigma_min={cfg.sigma_min:g} must be below sigma_max={cfg.sigma_max:g} (EDM: 0.002, 80)."
            )
        defaults = {
            p.name: p.default
            for p in inspect.signature(GeoScheduler.__init__).parameters.values()
            if p.name
            in (
                "beta_start", "beta_end", "beta_schedule", "trained_betas", "timestep_spacing", "steps_offset",
                "rescale_betas_zero_snr", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                "shift", "use_dynamic_shifting", "shift_terminal", "use_flow_sigmas", "flow_shift",
            )
        }  # fmt: skip
        unused = {k: getattr(cfg, k) for k, v in defaults.items() if getattr(cfg, k) != v}
        if unused:
            raise ValueError(
                f"{', '.join(f'{k}={v!r}' for k, v in unused.items())} do(es) not apply to an EDM model "
                "(preconditioning='edm'): its schedule is set by sigma_min, sigma_max, sigma_schedule and "
                "rho, as on EDMEulerScheduler. Leave these options at their defaults."
            )

    # ----------------------------------------------------------------------------------------------
    # hooks for subclasses
    # ----------------------------------------------------------------------------------------------
    def solver_step(
        self,
        y: torch.Tensor,
        denoised: torch.Tensor,
        sigma: float,
        sigma_next: float,
        noise: NoiseSource,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the solver in sigma coordinates.

        Args:
            y: current sample ``x / alpha`` (float32 or float64).
            denoised: the model's data prediction ``D(y, sigma)``.
            sigma, sigma_next: current and next noise level (``sigma_next`` may be 0).
            noise: call it to draw standard normal noise shaped like ``y`` (honours ``generator`` and
                ``variance_noise``); deterministic solvers never call it.

        Returns:
            ``(y_next, pred_original_sample)``.
        """
        raise NotImplementedError

    def reset_state(self) -> None:
        """Clear per-run solver state (history, stored derivatives). Called by ``set_timesteps``."""

    def schedule_sigmas(self, sigmas: torch.Tensor, given: str) -> torch.Tensor:
        """The N + 1 step sigmas of the run, from the ones the shared options give. ``given`` says how the
        schedule was asked for: ``"steps"`` (``num_inference_steps``), ``"timesteps"`` or ``"sigmas"``; a
        sampler with a schedule of its own (gradient estimation's log-linear one) replaces only ``"steps"``."""
        return sigmas

    def plan(self, sigmas: torch.Tensor) -> None:
        """Check and precompute what the solver needs for the run's call-level ``sigmas`` (e.g. ER-SDE's
        coefficients). Raising here leaves the scheduler without a schedule, never half-built."""

    def call_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Noise levels of the model calls, plus the terminal one, for the N + 1 step ``sigmas``.

        The default, one model call per step, returns ``sigmas``. A solver whose steps take several calls
        returns one entry per call (e.g. Heun: ``[s0, s1, s1, ..., s_{N-1}, s_{N-1}, 0]``, diffusers' order-2
        layout); ``step`` then advances one entry per call, mapping the sample from the level of the call
        to the level of the next entry, and ``solver_step`` receives these two levels.
        """
        return sigmas

    # ----------------------------------------------------------------------------------------------
    # indices (img2img / inpainting / SDXL hand-off)
    # ----------------------------------------------------------------------------------------------
    @property
    def step_index(self) -> int | None:
        """Index of the current step; advances by one after each ``step``."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First index, set by pipelines through :meth:`set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Set the first step index (pipelines call this for img2img and the SDXL refiner).

        Raises a ValueError when the index leaves no step to run: img2img / inpainting with
        ``int(strength * num_inference_steps) == 0`` (or an SDXL ``denoising_start`` past the last step),
        where the pipeline would otherwise fail later with a shape error.
        """
        if self.timesteps is not None and not 0 <= begin_index < len(self.timesteps):
            raise ValueError(
                f"begin_index {begin_index} leaves no denoising step: the schedule has {len(self.timesteps)} "
                "model calls. In img2img/inpainting this means int(strength * num_inference_steps) is 0: "
                "raise strength or num_inference_steps (or lower denoising_start)."
            )
        if self.order > 1 and begin_index > 0 and self._schedule_given:
            logger.warning(
                f"{type(self).__name__} makes {self.order} model calls per step, and this schedule was set with "
                f"`sigmas=` / `timesteps=`: a pipeline that then counts len(scheduler.timesteps) = "
                f"{len(self.timesteps)} as its number of steps (retrieve_timesteps; Flux img2img and inpainting "
                f"always pass sigmas) computes begin_index={begin_index} from it, cutting `strength` about "
                f"{self.order}x deeper into the schedule than asked. Use a one-call-per-step scheduler there "
                "(GeometricHeunScheduler's default multistep=True)."
            )
        self._begin_index = begin_index

    def index_for_timestep(self, timestep, schedule_timesteps: torch.Tensor | None = None) -> int:
        """Index of ``timestep`` in the schedule.

        For a duplicated value the second match is used (the order-2 layout, where a run that starts
        at a repeated timestep starts a new step); a value absent from the schedule maps to the last
        index, like diffusers' DPM-Solver.
        """
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.to(schedule.device)
        matches = (schedule == timestep).nonzero()
        if len(matches) == 0:
            return len(schedule) - 1
        return int(matches[1 if len(matches) > 1 else 0])

    def _init_step_index(self, timestep) -> None:
        if self.begin_index is not None:
            self._step_index = self.begin_index
            return
        if isinstance(timestep, torch.Tensor) and timestep.numel() != 1:
            raise ValueError(
                f"step takes one timestep per call, got a tensor of shape {tuple(timestep.shape)}; pass the "
                "scalar timestep from scheduler.timesteps."
            )
        schedule = self.timesteps
        value = timestep.to(schedule.device) if isinstance(timestep, torch.Tensor) else timestep
        if not bool((schedule == value).any()):
            raise ValueError(
                f"The first step's timestep {float(timestep):g} is not in this schedule "
                f"(scheduler.timesteps = {[round(float(t), 3) for t in schedule]}): run the timesteps of "
                "scheduler.timesteps in order, or call set_begin_index first to start later in the schedule."
            )
        self._step_index = self.index_for_timestep(timestep)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ----------------------------------------------------------------------------------------------
    # schedule
    # ----------------------------------------------------------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        mu: float | None = None,
    ) -> None:
        """Build the sampling schedule and reset all per-run state.

        Args:
            num_inference_steps: number of solver steps (model evaluations for order-1 schedulers).
            device: where ``self.timesteps`` goes (``self.sigmas`` stays on the CPU, in float64).
            timesteps: custom decreasing training timesteps (the last step then goes to
                ``final_sigmas_type``); for a flow-matching model ``1000 s``, used as given.
            sigmas: custom decreasing noise levels. Variance-preserving models: VE sigmas, N + 1 values
                *including* the terminal one (0 for a final denoising step), as diffusers' Euler,
                k-diffusion and ComfyUI take them. Flow-matching models: noise fractions ``s`` in (0, 1], N
                values *without* the terminal 0, before the shift, as ``FlowMatchEulerDiscreteScheduler``
                takes them (Flux passes ``linspace(1, 1/N, N)``); the shift is applied and 0 appended.
            mu: Flux's resolution-dependent shift (``calculate_shift`` of the pipeline); required with
                ``use_dynamic_shifting=True``, ignored otherwise (as by ``FlowMatchEulerDiscreteScheduler``).
        """
        schedule_given = timesteps is not None or sigmas is not None
        model_timesteps = None
        if self.is_flow_matching:
            if timesteps is not None and sigmas is not None:
                # CogView4: the model's (unshifted) timesteps beside the noise fractions, which are shifted, as
                # FlowMatchEulerDiscreteScheduler takes both
                model_timesteps = _as_decreasing("timesteps", timesteps)
                if len(model_timesteps) != len(sigmas):
                    raise ValueError(
                        f"`timesteps` ({len(model_timesteps)} values) and `sigmas` ({len(sigmas)} values) passed "
                        "together must have one value per step each, as FlowMatchEulerDiscreteScheduler takes them."
                    )
                timesteps = None
            sigmas, given = self._flow_sigmas(num_inference_steps, timesteps, sigmas, mu)
        else:
            if mu is not None:
                raise ValueError(
                    f"mu={mu} is the dynamic shift of a flow-matching schedule, but this scheduler serves a "
                    f"variance-preserving model (prediction_type={self.config.prediction_type!r}). Do not pass "
                    "mu, or build the scheduler from the flow pipeline's scheduler config."
                )
            if self.is_edm:
                sigmas, given = self._edm_sigmas(num_inference_steps, timesteps, sigmas)
            else:
                sigmas, given = self._vp_sigmas(num_inference_steps, timesteps, sigmas)

        cfg, param = self.config, self.parameterization
        sigmas = self.schedule_sigmas(sigmas, given)
        sigmas, jump = ode_jump(sigmas, cfg.jump_sigma, cfg.jump_step, lambda s: len(self.call_sigmas(s)) - 1)
        calls = self.call_sigmas(sigmas)
        if model_timesteps is not None:
            if len(calls) != len(sigmas):
                raise ValueError(
                    f"{type(self).__name__} calls the model {len(calls) - 1} times for {len(sigmas) - 1} steps, so the "
                    "`timesteps` passed beside `sigmas` (one per step, CogView4's) name no timestep for the extra "
                    "calls: use a one-call scheduler (GeometricHeunScheduler's default multistep=True)."
                )
            model_timesteps = model_timesteps[: len(calls) - 1]  # ODE-Jump may end the run early
        try:
            self.plan(calls)
        except Exception:
            self.sigmas = self.num_inference_steps = self.ode_jump = None
            raise
        if jump is not None:
            logger.info(
                f"ODE-Jump: the run returns the denoiser output at sigma={jump.sigma:.4g} (step {jump.step}) "
                f"after {jump.nfe} model calls, saving {jump.nfe_saved} of {jump.nfe + jump.nfe_saved}."
            )
        self.ode_jump = jump
        self._schedule_given = schedule_given
        self.num_inference_steps = len(sigmas) - 1
        self.sigmas = calls
        if model_timesteps is None:
            model_timesteps = param.timestep_of(calls[:-1])
        self.timesteps = model_timesteps.to(torch.float32).to(device)
        self._step_index = None
        self._begin_index = None
        self._nonfinite_step = None
        self.reset_state()

    def _respacing(self) -> str | None:
        """The sigma respacing the config asks for ("karras", "exponential", "beta"), or ``None``."""
        cfg = self.config
        on = _respacings(cfg.use_karras_sigmas, cfg.use_exponential_sigmas, cfg.use_beta_sigmas)
        return on[0][0].removeprefix("use_").removesuffix("_sigmas") if on else None

    def _vp_sigmas(self, num_inference_steps, timesteps, sigmas) -> tuple[torch.Tensor, str]:
        """The N + 1 VE sigmas of a variance-preserving model's run, and how they were asked for."""
        passed = _exactly_one_schedule_input(num_inference_steps, timesteps, sigmas)
        given = {"num_inference_steps": "steps"}.get(passed, passed)
        cfg, param = self.config, self.parameterization
        respacing = self._respacing()
        if sigmas is not None:
            sigmas = _as_decreasing("sigmas", sigmas)
            if len(sigmas) < 2:
                raise ValueError("`sigmas` needs at least 2 values: N noise levels and the terminal one.")
            _check_call_levels(sigmas[:-1], param)
        elif timesteps is not None:
            if respacing is not None:
                raise ValueError(f"Cannot pass `timesteps` with use_{respacing}_sigmas=True; pass `sigmas`.")
            t = _as_decreasing("timesteps", timesteps)
            if t[0] > cfg.num_train_timesteps - 1 or t[-1] < 0:
                raise ValueError(
                    f"`timesteps` must lie in [0, {cfg.num_train_timesteps - 1}], got {t.tolist()}."
                )
            sigmas = append_terminal(param.sigma_of(t), self._terminal_sigma())
        else:
            n = num_inference_steps
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
                raise TypeError(f"num_inference_steps must be an int, got {type(n).__name__}.")
            if not 1 <= n <= cfg.num_train_timesteps:
                raise ValueError(
                    f"num_inference_steps must be between 1 and num_train_timesteps={cfg.num_train_timesteps},"
                    f" got {n}."
                )
            if cfg.timestep_spacing == "leading" and (n - 1) * (
                cfg.num_train_timesteps // n
            ) + cfg.steps_offset >= (cfg.num_train_timesteps):
                raise ValueError(
                    f"timestep_spacing='leading' with steps_offset={cfg.steps_offset} puts the first of "
                    f"{n} steps past the last training timestep {cfg.num_train_timesteps - 1}: lower "
                    "steps_offset or num_inference_steps, or use timestep_spacing='trailing'."
                )
            t = torch.from_numpy(
                spaced_timesteps(n, cfg.num_train_timesteps, cfg.timestep_spacing, cfg.steps_offset)
            )
            sigmas = param.train_sigmas[t.long()]
            if respacing is not None:
                lo = cfg.sigma_min if cfg.sigma_min is not None else float(sigmas[-1])
                hi = cfg.sigma_max if cfg.sigma_max is not None else float(sigmas[0])
                sigmas = respace_sigmas(respacing, lo, hi, n)
            sigmas = append_terminal(sigmas, self._terminal_sigma())

        return sigmas, given

    def _edm_sigmas(self, num_inference_steps, timesteps, sigmas) -> tuple[torch.Tensor, str]:
        """The N + 1 sigmas of an EDM model's run, as ``EDMEulerScheduler.set_timesteps`` builds them: N steps
        are its ``sigma_schedule`` at ``ramp = linspace(0, 1, N)``; ``sigmas`` increasing from 0 to at most 1 are
        such a ramp (EDMEulerScheduler's and Cosmos' convention, N values), decreasing ones our VE noise levels
        (N + 1 values with the terminal one); ``timesteps`` are ``c_noise = log(sigma) / 4``."""
        _exactly_one_schedule_input(num_inference_steps, timesteps, sigmas)
        param = self.parameterization
        if sigmas is not None:
            values = _as_float64("sigmas", sigmas)
            if (
                len(values) > 1
                and bool((values[1:] > values[:-1]).all())
                and values[0] >= 0
                and values[-1] <= 1
            ):
                return append_terminal(self._edm_schedule(values), self._edm_terminal()), "sigmas"
            sigmas = _as_decreasing("sigmas", values)
            if len(sigmas) < 2:
                raise ValueError(
                    "`sigmas` needs at least 2 values: N noise levels and the terminal one (or an increasing ramp "
                    "in [0, 1], as EDMEulerScheduler takes it)."
                )
            _check_call_levels(sigmas[:-1], param)
            return sigmas, "sigmas"
        if timesteps is not None:
            t = _as_float64("timesteps", timesteps)
            if len(t) == 0 or not torch.isfinite(t).all() or (len(t) > 1 and not (t[1:] < t[:-1]).all()):
                raise ValueError(
                    "`timesteps` of an EDM model are strictly decreasing finite c_noise = log(sigma) / 4 values, "
                    f"got {t.tolist()}."
                )
            levels = param.sigma_of(t)
            _check_call_levels(levels, param)
            return append_terminal(levels, self._edm_terminal()), "timesteps"
        n = num_inference_steps
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"num_inference_steps must be an int, got {type(n).__name__}.")
        if n < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {n}.")
        levels = self._edm_schedule(torch.linspace(0, 1, n, dtype=torch.float64))
        return append_terminal(levels, self._edm_terminal()), "steps"

    def _edm_schedule(self, ramp: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return edm_sigmas(ramp, cfg.sigma_schedule, cfg.sigma_min, cfg.sigma_max, cfg.rho)

    def _edm_terminal(self) -> float:
        """``final_sigmas_type="sigma_min"`` on an EDM model: ``config.sigma_min`` (EDMDPMSolverMultistep's
        rule; EDMEuler's, the last call's level, is the same for every schedule it builds)."""
        return 0.0 if self.config.final_sigmas_type == "zero" else float(self.config.sigma_min)

    def _flow_sigmas(self, num_inference_steps, timesteps, sigmas, mu) -> tuple[torch.Tensor, str]:
        """The N + 1 VE sigmas of a flow-matching model's run (``sigma = s / (1 - s)``, ``inf`` at ``s = 1``),
        built in noise fractions ``s`` exactly as ``FlowMatchEulerDiscreteScheduler.set_timesteps`` builds them
        (or, with ``use_flow_sigmas=True``, as DPM-Solver / UniPC do), and how they were asked for."""
        cfg = self.config
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError(
                "use_dynamic_shifting=True needs `mu` in set_timesteps (Flux pipelines compute it from the image "
                "size with calculate_shift and pass it): pass mu=..., or use_dynamic_shifting=False with a "
                "fixed `shift`."
            )
        if not cfg.use_dynamic_shifting:
            mu = None  # ignored without dynamic shifting, as FlowMatchEulerDiscreteScheduler does
        elif not isinstance(mu, (int, float, np.floating, np.integer)) or not math.isfinite(mu):
            raise ValueError(f"mu must be a finite number, got {mu!r}.")
        if timesteps is not None and sigmas is not None:
            raise ValueError("Pass at most one of `timesteps` and `sigmas` to set_timesteps, not both.")
        n = num_inference_steps
        if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
            raise ValueError(f"num_inference_steps must be a positive int, got {n!r}.")
        respacing = self._respacing()
        total = cfg.num_train_timesteps
        if timesteps is not None:
            t = _as_decreasing("timesteps", timesteps)
            if t[-1] <= 0 or t[0] > total:
                raise ValueError(
                    f"`timesteps` of a flow-matching model must lie in (0, {total}], got {t.tolist()}."
                )
            return append_terminal(flow_sigma(t / total), 0.0), "timesteps"
        if sigmas is not None:
            ramp = _as_float64("sigmas", sigmas)
            if len(ramp) > 1 and ramp[0] == 0 and bool((ramp[1:] > ramp[:-1]).all()):
                raise ValueError(
                    "`sigmas` increasing from 0 is an EDM ramp (Cosmos-Predict2's pipeline passes linspace(0, 1, N)), "
                    "but this scheduler serves a flow-matching model. Build it from the pipeline's scheduler config "
                    "after the pipeline registered its EDM keys (sigma_data, sigma_min, sigma_max): "
                    "X.from_config(pipe.scheduler.config) gives an EDM scheduler."
                )
            s = _as_decreasing("sigmas", sigmas)
            if s[-1] <= 0 or s[0] > 1:
                raise ValueError(
                    f"`sigmas` of a flow-matching model are noise fractions s in (0, 1] (N values, without the "
                    f"terminal 0, before the shift), got {s.tolist()}."
                )
            if n is not None and n != len(s):
                raise ValueError(
                    f"num_inference_steps={n} but `sigmas` has {len(s)} values: pass one of them."
                )
            n, given = len(s), "sigmas"
            if torch.allclose(s, trailing_fractions(n), rtol=0, atol=1e-6):
                # FluxPipeline's own default, sigmas = linspace(1, 1/N, N): the "trailing" spacing of N steps,
                # not a custom schedule (a sampler with its own schedule, projection DDIM, may replace it)
                given = "steps"
        elif n is None:
            raise ValueError("Pass `num_inference_steps`, `timesteps` or `sigmas` to set_timesteps.")
        elif cfg.use_flow_sigmas:
            if respacing is not None:
                raise ValueError(f"use_flow_sigmas=True cannot be combined with use_{respacing}_sigmas=True.")
            shift = math.exp(mu) if mu is not None else cfg.flow_shift
            return append_terminal(flow_sigma(dpm_flow_fractions(n, total, shift)), 0.0), "steps"
        elif cfg.timestep_spacing == "trailing":
            s, given = trailing_fractions(n), "steps"
        else:
            s, given = flow_match_fractions(n, total, cfg.shift, cfg.use_dynamic_shifting), "steps"
        # DPM-Solver / UniPC (use_flow_sigmas=True) shift custom sigmas by their flow_shift
        shift = cfg.flow_shift if cfg.use_flow_sigmas else cfg.shift
        s = shift_flow_fractions(s, shift, mu, cfg.time_shift_type, cfg.shift_terminal)
        if respacing is not None:
            s = respace_sigmas(respacing, float(s[-1]), float(s[0]), n)
        return append_terminal(flow_sigma(s), 0.0), given

    def _terminal_sigma(self) -> float:
        if self.is_flow_matching or self.config.final_sigmas_type == "zero":
            return 0.0
        return self.parameterization.sigma_min

    # ----------------------------------------------------------------------------------------------
    # the VP interface
    # ----------------------------------------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity for VP and flow models (the pipeline's sample is already the model input); for an EDM model
        ``c_in x = x / sqrt(sigma^2 + sigma_data^2)`` at the level of the current step (of ``timestep`` before
        the first step), as ``EDMEulerScheduler.scale_model_input``. Changes no state."""
        if self.config.preconditioning != "edm":  # "pipeline": the pipeline scales the input itself
            return sample
        if self.sigmas is None:
            raise ValueError(
                "scale_model_input of an EDM model needs the schedule: call set_timesteps first."
            )
        if self._step_index is not None:
            index = self._step_index
        elif self._begin_index is not None:
            index = self._begin_index
        else:
            index = self.index_for_timestep(timestep)
        return sample * self.parameterization.c_in(float(self.sigmas[index]))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
        per_token_timesteps: torch.Tensor | None = None,
    ) -> GeoSchedulerOutput | tuple:
        """Advance ``sample`` by one step of the solver.

        ``step`` is atomic: if it raises (a bad input, a NaN model output, a failing noise draw or observer),
        the scheduler is exactly as before the call (step index, multistep history, solver state,
        ``_nonfinite_step``), so the same step can be retried. The inputs are checked before any work; the
        rest runs on a shallow snapshot of the instance's attributes (``vars(self)``), restored on an
        exception. Hooks may therefore assign ``self`` attributes freely (``self._history = [...]``), but
        must replace a stored object rather than change it in place.

        Args:
            model_output: the model's prediction at ``(sample, timestep)`` (see ``prediction_type``).
            timestep: the current timestep (from ``self.timesteps``).
            sample: the current sample, in the pipeline's VP coordinates.
            generator: random generator for stochastic solvers; a list takes one generator per sample
                (its length must be the batch size, or 1).
            variance_noise: explicit standard-normal noise for stochastic solvers (overrides ``generator``).
            return_dict: return a :class:`GeoSchedulerOutput` (else a tuple, ``prev_sample`` first).
            per_token_timesteps: a flow model's timestep of every token, shaped like the sample's leading
                dimensions (LTXConditionPipeline: conditioning tokens sit at lower levels). As for
                ``FlowMatchEulerDiscreteScheduler``, ``model_output`` is then the *negated* velocity. Tokens at
                the step's own timestep take the solver's step; any other token takes
                ``FlowMatchEulerDiscreteScheduler``'s per-token Euler step to the next lower level of the
                schedule, which only a memoryless Euler step can serve (``serves_per_token_timesteps``); other
                schedulers raise here, before any state changes.
        """
        self._check_step_inputs(model_output, sample, generator, variance_noise)
        own_level = None
        if per_token_timesteps is not None:
            own_level = self._own_level_tokens(per_token_timesteps, timestep, sample)
            # FlowMatchEulerDiscreteScheduler's per-token step is x + (s - s_next) * output, the sign flipped from
            # its plain step: with per_token_timesteps a pipeline passes the negated velocity (LTXCondition's
            # `-noise_pred`)
            model_output = -model_output
        snapshot = dict(vars(self))
        try:
            return self._step(
                model_output,
                timestep,
                sample,
                generator,
                variance_noise,
                return_dict,
                own_level,
                per_token_timesteps,
            )
        except BaseException:
            vars(self).clear()
            vars(self).update(snapshot)
            raise

    def _check_step_inputs(self, model_output, sample, generator, variance_noise) -> None:
        """The checks of ``step`` that need no state: they raise before anything (a generator included)
        is touched."""
        if self.num_inference_steps is None:
            raise ValueError(
                f"{type(self).__name__}.step called before set_timesteps; call set_timesteps first."
            )
        for name, value in (("model_output", model_output), ("sample", sample)):
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
                raise TypeError(
                    f"{name} must be a floating-point tensor (float32, float16, bfloat16 or float64), got {kind}: "
                    f"pass the {'model' if name == 'model_output' else 'pipeline'}'s tensor as it is."
                )
        if model_output.shape != sample.shape:
            hint = ""
            if model_output.ndim == sample.ndim and model_output.ndim > 1:
                if model_output.shape[1] == 2 * sample.shape[1]:
                    hint = (
                        " The model output has twice the sample's channels (a learned variance): pass only the "
                        "first half, model_output[:, :C]."
                    )
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has shape "
                f"{tuple(sample.shape)}: step needs one model prediction per sample value.{hint}"
            )
        if variance_noise is not None and variance_noise.shape != sample.shape:
            raise ValueError(
                f"variance_noise has shape {tuple(variance_noise.shape)}, expected {tuple(sample.shape)}."
            )
        if isinstance(generator, (list, tuple)) and variance_noise is None and self.stochastic:
            if len(generator) not in (1, len(sample)):
                raise ValueError(
                    f"generator is a list of {len(generator)} generators but the batch has {len(sample)} "
                    "samples: pass one generator per sample (or a single generator)."
                )

    def _step(
        self,
        model_output,
        timestep,
        sample,
        generator,
        variance_noise,
        return_dict,
        own_level,
        per_token_timesteps,
    ):
        """The body of :meth:`step`, after its input checks (any state it changes is restored if it raises);
        ``own_level``: which tokens sit at the step's own timestep (``None``: all of them)."""
        if self._step_index is None:
            self._init_step_index(timestep)
        index = self._step_index
        if index >= len(self.timesteps):
            raise ValueError(
                f"step called {index + 1} times but the schedule has {len(self.timesteps)} model calls; "
                "call set_timesteps again to start a new run."
            )
        self._check_finite(model_output, index)

        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        sigma, sigma_next = float(self.sigmas[index]), float(self.sigmas[index + 1])
        param = self.parameterization
        x = sample.to(dtype)
        y = param.to_y(x, sigma)  # at sigma = inf (a flow model's pure noise): the limit y / sigma
        denoised = self.clip_denoised(
            param.denoised(model_output.to(dtype), x, y, sigma, self.config.prediction_type)
        )

        def noise() -> torch.Tensor:
            if variance_noise is not None:
                return variance_noise.to(device=y.device, dtype=dtype)
            return randn_tensor(y.shape, generator=generator, device=y.device, dtype=dtype)

        y_next, pred_original = self.solver_step(y, denoised, sigma, sigma_next, noise)
        if self.on_step is not None:
            self.on_step(y, denoised, sigma, sigma_next, y_next)
        prev_sample = y_next.mul(self.parameterization.alpha(sigma_next))
        if own_level is not None and not bool(own_level.all()):
            prev_sample = torch.where(
                own_level, prev_sample, self._per_token_euler(model_output, x, per_token_timesteps)
            )
        prev_sample = prev_sample.to(sample.dtype)
        pred_original = pred_original.to(sample.dtype)
        self._step_index = index + 1
        if not return_dict:
            return (prev_sample, pred_original)
        return GeoSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original)

    def clip_denoised(self, denoised: torch.Tensor) -> torch.Tensor:
        """The data prediction ``D`` as the solvers read it: dynamic thresholding (``thresholding``) or clipping
        to ``[-clip_sample_range, clip_sample_range]`` (``clip_sample``), as diffusers' DDIM and DPM-Solver
        treat their predicted ``x0``; unchanged when neither is set. Every solver reading ``D`` only, this is
        DDIM with ``use_clipped_model_output=True`` (the noise direction is the clipped ``D``'s)."""
        cfg = self.config
        if cfg.thresholding:
            flat = denoised.reshape(denoised.shape[0], -1)
            s = torch.quantile(flat.abs().float(), cfg.dynamic_thresholding_ratio, dim=1)
            s = s.clamp(min=1.0, max=cfg.sample_max_value).to(denoised.dtype)
            s = s.reshape(-1, *([1] * (denoised.ndim - 1)))
            return torch.maximum(torch.minimum(denoised, s), -s) / s
        if cfg.clip_sample:
            return denoised.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        return denoised

    def _own_level_tokens(self, per_token_timesteps, timestep, sample: torch.Tensor) -> torch.Tensor:
        """Which tokens sit at the step's own timestep (a mask broadcasting against ``sample``); raises, before
        any state changes, where the others cannot be served."""
        name = type(self).__name__
        t_tok = torch.as_tensor(per_token_timesteps).to(sample.device, torch.float64)
        lead = tuple(sample.shape[: t_tok.ndim])
        if (
            t_tok.ndim == 0
            or t_tok.ndim > sample.ndim
            or any(n not in (1, m) for n, m in zip(t_tok.shape, lead, strict=False))
        ):
            raise ValueError(
                f"per_token_timesteps has shape {tuple(t_tok.shape)}; it needs one timestep per token, shaped like "
                f"(or broadcasting to) the leading dimensions of the sample's shape {tuple(sample.shape)}."
            )
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        own = (t_tok - t).abs() <= 1e-3
        if not bool(own.all()):
            if not self.is_flow_matching:
                raise ValueError(
                    f"per_token_timesteps with tokens at other timesteps than {t:g} is a flow-matching pipeline's "
                    f"(LTXConditionPipeline); {name} serves a variance-preserving model here."
                )
            if not self.serves_per_token_timesteps:
                raise ValueError(
                    f"per_token_timesteps puts some tokens at other noise levels than the step's timestep {t:g} "
                    f"(LTXConditionPipeline's conditioning frames). {name}'s step carries state from step to step "
                    "and cannot move a token on its own schedule: use SigmaDDIMScheduler ('sigma-ddim', the Euler "
                    "step) or the pipeline's FlowMatchEulerDiscreteScheduler for conditioned generation."
                )
        return own.reshape(*own.shape, *([1] * (sample.ndim - own.ndim)))

    def _per_token_euler(
        self, model_output: torch.Tensor, x: torch.Tensor, per_token_timesteps
    ) -> torch.Tensor:
        """``FlowMatchEulerDiscreteScheduler``'s per-token step: each token's velocity moves it from its own noise
        fraction ``s = t / T`` to the largest level of the schedule below it (0 past the last),
        ``x + (s_next - s) v`` (the Euler/DDIM step in the token's own coordinates)."""
        t_tok = torch.as_tensor(per_token_timesteps).to(x.device, torch.float64)
        s_tok = t_tok / self.config.num_train_timesteps
        levels = noise_fraction(self.sigmas).to(x.device, torch.float64)
        below = levels.reshape(-1, *([1] * s_tok.ndim)) < (s_tok - 1e-6)
        s_next = (below * levels.reshape(-1, *([1] * s_tok.ndim))).amax(dim=0)
        shape = (*s_tok.shape, *([1] * (x.ndim - s_tok.ndim)))
        dt = (s_next - s_tok).reshape(shape).to(x.dtype)
        return x + dt * model_output.to(x.dtype)

    def _check_finite(self, model_output: torch.Tensor, index: int) -> None:
        """Raise on a NaN/inf model output, naming the step. On the CPU the check is immediate; on an
        accelerator the first bad step is recorded on the device and checked once, at the last step,
        so ``step`` never waits for the device in between."""
        # one reduction instead of an elementwise isfinite: any NaN/inf makes the (float32) sum non-finite
        bad = ~torch.isfinite(model_output.sum(dtype=torch.float32))
        if model_output.device.type == "cpu":
            if bad:
                self._raise_nonfinite(index)
            return
        if self._nonfinite_step is None:
            self._nonfinite_step = torch.full((), -1, dtype=torch.long, device=model_output.device)
        self._nonfinite_step = torch.where(bad & (self._nonfinite_step < 0), index, self._nonfinite_step)
        if index == len(self.timesteps) - 1 and int(self._nonfinite_step) >= 0:
            self._raise_nonfinite(int(self._nonfinite_step))

    def _raise_nonfinite(self, index: int) -> None:
        raise ValueError(
            f"The model output at step {index} (timestep {float(self.timesteps[index]):.2f}, "
            f"sigma {float(self.sigmas[index]):.4g}) contains NaN or inf. Check the model and its dtype "
            "(float16 overflow is a common cause; try float32 or bfloat16)."
        )

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The forward process at the noise level of ``timesteps``: VP ``alpha * (x0 + sigma * noise)``; for a
        flow-matching model ``(1 - s) x0 + s noise`` (the same, with ``alpha = 1 - s``; :meth:`scale_noise`).

        Before a run (img2img) the level is that of ``begin_index`` if set, during a run (inpainting)
        that of the current step; otherwise each timestep is looked up in the schedule, or, if absent
        (or before ``set_timesteps``), in the training schedule.
        """
        dtype = torch.float64 if original_samples.dtype == torch.float64 else torch.float32
        timesteps = torch.as_tensor(timesteps).reshape(-1).cpu()
        if self.sigmas is not None and self.begin_index is not None:
            index = self.step_index if self.step_index is not None else self.begin_index
            sigma = self.sigmas[index].repeat(len(timesteps))
        else:
            sigma = torch.stack([self._sigma_at_timestep(t) for t in timesteps])
        x0, n = original_samples.to(dtype), noise.to(device=original_samples.device, dtype=dtype)
        shape = (-1, *([1] * (original_samples.ndim - 1)))
        if self.is_flow_matching:
            s = noise_fraction(sigma).to(device=original_samples.device, dtype=dtype).reshape(shape)
            return (s * n + (1.0 - s) * x0).to(original_samples.dtype)
        sigma = sigma.to(device=original_samples.device, dtype=dtype).reshape(shape)
        return (self.parameterization.alpha(sigma) * (x0 + sigma * n)).to(original_samples.dtype)

    def scale_noise(
        self, sample: torch.Tensor, timestep: float | torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Flow-matching forward process ``s * noise + (1 - s) * sample`` at ``timestep`` (what SD3 / Flux
        img2img and inpainting call, as on ``FlowMatchEulerDiscreteScheduler``); the level is found as in
        :meth:`add_noise`."""
        if not self.is_flow_matching:
            raise ValueError(
                "scale_noise is the flow-matching forward process, but this scheduler serves a variance-preserving "
                f"model (prediction_type={self.config.prediction_type!r}); VP pipelines call add_noise."
            )
        if noise is None:
            raise ValueError("scale_noise needs `noise` (a tensor shaped like `sample`).")
        return self.add_noise(sample, noise, timestep)

    def _sigma_at_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        if self.sigmas is not None:
            matches = (self.timesteps.cpu() == timestep.to(torch.float32)).nonzero()
            if len(matches):
                return self.sigmas[int(matches[0])]
        return self.parameterization.sigma_of(timestep.reshape(1).to(torch.float64))[0]

    def get_velocity(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The v-prediction target ``alpha * noise - alpha * sigma * x0`` at training ``timesteps``; for a
        flow-matching model its velocity ``noise - x0`` (the same at every timestep)."""
        if self.is_flow_matching:
            return (noise - sample).to(sample.dtype)
        sigma = self.parameterization.sigma_of(torch.as_tensor(timesteps).reshape(-1).cpu().to(torch.float64))
        sigma = sigma.to(sample.device, torch.float32).reshape(-1, *([1] * (sample.ndim - 1)))
        alpha = self.parameterization.alpha(sigma)
        return (alpha * noise - alpha * sigma * sample).to(sample.dtype)


def _exactly_one_schedule_input(num_inference_steps, timesteps, sigmas) -> str:
    """The name of the one schedule input ``set_timesteps`` was given (a VP or EDM model takes exactly one)."""
    passed = [
        name
        for name, v in (
            ("num_inference_steps", num_inference_steps),
            ("timesteps", timesteps),
            ("sigmas", sigmas),
        )
        if v is not None
    ]
    if len(passed) != 1:
        raise ValueError(
            "Pass exactly one of `num_inference_steps`, `timesteps` or `sigmas` to set_timesteps, "
            f"got {passed or 'none'}."
        )
    return passed[0]


def _respacings(karras: bool, exponential: bool, beta: bool):
    return [
        (name, on)
        for name, on in (
            ("use_karras_sigmas", karras),
            ("use_exponential_sigmas", exponential),
            ("use_beta_sigmas", beta),
        )
        if on
    ]


def _checked_training_sigmas(alphas_cumprod: torch.Tensor, trained_betas) -> torch.Tensor:
    """The training sigmas, refusing betas whose noise levels are not finite and strictly increasing
    (``alphas_cumprod`` underflowing to 0 in float32, or a beta so small that a step adds no noise)."""
    sigmas = training_sigmas(alphas_cumprod)
    source = "trained_betas" if trained_betas is not None else "beta_start / beta_end / beta_schedule"
    finite = torch.isfinite(sigmas) & (sigmas > 0)
    if not finite.all():
        t = int((~finite).nonzero()[0])
        raise ValueError(
            f"The training betas ({source}) give a noise level sigma = {float(sigmas[t])} at timestep {t}: "
            "alphas_cumprod must stay in (0, 1). Lower beta_end (Stable Diffusion uses 0.012, DDPM 0.02)."
        )
    flat = (sigmas[1:] <= sigmas[:-1]).nonzero()
    if len(flat):
        t = int(flat[0]) + 1
        raise ValueError(
            f"The training betas ({source}) do not add noise at timestep {t} (sigma stays at "
            f"{float(sigmas[t]):.6g}): every beta must be large enough to raise the noise level in float32."
        )
    return sigmas


#: relative slack of the Karras / exponential / beta sigma range around the trained one (rounded values)
SIGMA_RANGE_RTOL = 1e-4


def _check_sigma_range(sigma_min: float | None, sigma_max: float | None, param: DiscreteVP) -> None:
    """``sigma_min`` / ``sigma_max`` must lie in the model's trained noise range: outside it several noise
    levels map to the same training timestep (the model cannot see a level it was not trained on)."""
    lo, hi = param.sigma_min, param.sigma_max
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if value is not None and not lo * (1 - SIGMA_RANGE_RTOL) <= value <= hi * (1 + SIGMA_RANGE_RTOL):
            raise ValueError(
                f"{name}={value:g} is outside the model's trained noise range [{lo:.6g}, {hi:.6g}] (from its "
                f"betas): choose {name} in that range, or None for the trained end."
            )
    if sigma_min is not None and sigma_max is not None and not sigma_min < sigma_max:
        raise ValueError(f"sigma_min={sigma_min:g} must be below sigma_max={sigma_max:g}.")


def _check_call_levels(levels: torch.Tensor, param: DiscreteVP) -> None:
    """Custom ``sigmas=``: the levels at which the model is called must lie in its trained range."""
    lo, hi = param.sigma_min, param.sigma_max
    outside = (levels < lo * (1 - SIGMA_RANGE_RTOL)) | (levels > hi * (1 + SIGMA_RANGE_RTOL))
    if outside.any():
        raise ValueError(
            f"`sigmas` calls the model at noise levels {[float(f'{v:.6g}') for v in levels[outside]]} outside "
            f"its trained range "
            f"[{lo:.6g}, {hi:.6g}]: only the last (terminal) value may lie below it (0 for a final denoising "
            "step). Clip the schedule to the trained range."
        )


def _as_float64(name: str, values) -> torch.Tensor:
    """``values`` as a 1-D float64 CPU tensor (a list of Python floats never passes through float32)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().to(torch.float64).reshape(-1)
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).reshape(-1)


def _as_decreasing(name: str, values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        t = values.detach().cpu().to(torch.float64).reshape(-1)
    else:  # straight to float64: a list of Python floats must not pass through float32
        t = torch.as_tensor(np.asarray(values, dtype=np.float64)).reshape(-1)
    if len(t) == 0:
        raise ValueError(f"`{name}` is empty.")
    if not torch.isfinite(t).all():
        raise ValueError(f"`{name}` contains NaN or inf: {t.tolist()}.")
    if (t < 0).any():
        raise ValueError(f"`{name}` must be non-negative, got {t.tolist()}.")
    if len(t) > 1 and not (t[1:] < t[:-1]).all():
        raise ValueError(f"`{name}` must be strictly decreasing (from noise to data), got {t.tolist()}.")
    return t

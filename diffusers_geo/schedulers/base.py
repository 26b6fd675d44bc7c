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

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import PREDICTION_TYPES, DiscreteVP, denoised_from_y
from ..schedules import (
    BETA_SCHEDULES,
    TIMESTEP_SPACINGS,
    append_terminal,
    make_betas,
    rescale_zero_terminal_snr,
    respace_sigmas,
    spaced_timesteps,
    training_sigmas,
)

FINAL_SIGMAS_TYPES = ("zero", "sigma_min")

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


@dataclass(frozen=True)
class OdeJump:
    """Where an ODE-Jump run ends (see ``jump_sigma`` / ``jump_step`` of :class:`GeoScheduler`).

    Args:
        step: index of the solver step whose noise level the run jumps from (0-based).
        sigma: that noise level; the run returns the denoiser output ``D(y, sigma)`` there.
        nfe: model calls of the truncated run.
        nfe_saved: model calls saved versus the full schedule.
    """

    step: int
    sigma: float
    nfe: int
    nfe_saved: int


def scheduler_config(init: Callable) -> Callable:
    """Register a subclass ``__init__`` with the shared config keys of :class:`GeoScheduler`.

    The subclass writes ``def __init__(self, <its own keyword arguments>, **base_config)`` and passes
    ``**base_config`` to ``super().__init__``. This decorator gives the function the explicit merged
    signature (its own arguments, then every base key as keyword-only), so ``inspect.signature`` — which
    ``from_config``/``from_pretrained`` and ``register_to_config`` read — lists every config key and no
    ``**kwargs``: a saved config round-trips and an unknown argument is a ``TypeError``.
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
    return register_to_config(init)


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
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

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
    ):
        _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        _check_choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        if sum([use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas]) > 1:
            raise ValueError(
                "Only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be True."
            )
        if use_beta_sigmas:
            try:
                import scipy  # noqa: F401
            except ImportError as err:
                raise ImportError("use_beta_sigmas=True needs scipy: pip install scipy") from err
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}.")
        _check_jump(jump_sigma, jump_step)

        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            self.betas = rescale_zero_terminal_snr(self.betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2**-24  # finite sigma_max, as diffusers' Euler does
        self.parameterization = DiscreteVP(training_sigmas(self.alphas_cumprod))
        self.init_noise_sigma = 1.0  # VP interface: pipelines start from unscaled N(0, I)

        self.num_inference_steps: int | None = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps)[::-1].astype(np.float32).copy())
        self.sigmas: torch.Tensor | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._nonfinite_step: torch.Tensor | None = None
        self.ode_jump: OdeJump | None = None
        self.reset_state()

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

    def jump_output(self, y: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        """What ODE-Jump returns at its last call: the denoiser output ``denoised = D(y, sigma)``. A solver
        that corrects ``y`` at every call with its stored state (the multistep GeometricHeun) returns the
        output at its corrected point, as its own final step would."""
        return denoised

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
        self._step_index = self.index_for_timestep(timestep) if self.begin_index is None else self.begin_index

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
    ) -> None:
        """Build the sampling schedule and reset all per-run state.

        Args:
            num_inference_steps: number of solver steps (model evaluations for order-1 schedulers).
            device: where ``self.timesteps`` goes (``self.sigmas`` stays on the CPU, in float64).
            timesteps: custom decreasing training timesteps (the last step then goes to
                ``final_sigmas_type``).
            sigmas: custom decreasing noise levels, N + 1 values *including* the terminal one (0 for a
                final denoising step), as diffusers' Euler, k-diffusion and ComfyUI take them.
        """
        given = [
            name
            for name, v in (
                ("num_inference_steps", num_inference_steps),
                ("timesteps", timesteps),
                ("sigmas", sigmas),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "Pass exactly one of `num_inference_steps`, `timesteps` or `sigmas` to set_timesteps, "
                f"got {given or 'none'}."
            )
        cfg, param = self.config, self.parameterization
        respacing = next(
            (
                kind
                for kind, on in (
                    ("karras", cfg.use_karras_sigmas),
                    ("exponential", cfg.use_exponential_sigmas),
                    ("beta", cfg.use_beta_sigmas),
                )
                if on
            ),
            None,
        )
        if sigmas is not None:
            sigmas = _as_decreasing("sigmas", sigmas)
            if len(sigmas) < 2:
                raise ValueError("`sigmas` needs at least 2 values: N noise levels and the terminal one.")
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
            t = torch.from_numpy(
                spaced_timesteps(n, cfg.num_train_timesteps, cfg.timestep_spacing, cfg.steps_offset)
            )
            sigmas = param.train_sigmas[t.long()]
            if respacing is not None:
                lo = cfg.sigma_min if cfg.sigma_min is not None else float(sigmas[-1])
                hi = cfg.sigma_max if cfg.sigma_max is not None else float(sigmas[0])
                sigmas = respace_sigmas(respacing, lo, hi, n)
            sigmas = append_terminal(sigmas, self._terminal_sigma())

        sigmas, self.ode_jump = self._ode_jump(self.prepare_sigmas(sigmas))
        self.num_inference_steps = len(sigmas) - 1
        self.sigmas = self.call_sigmas(sigmas)
        self.timesteps = param.timestep_of(self.sigmas[:-1]).to(torch.float32).to(device)
        self._step_index = None
        self._begin_index = None
        self._nonfinite_step = None
        self.reset_state()

    def prepare_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Last look at the N + 1 sigmas before they are used (a hook for schedule options)."""
        return sigmas

    def _terminal_sigma(self) -> float:
        return 0.0 if self.config.final_sigmas_type == "zero" else self.parameterization.sigma_min

    def _ode_jump(self, sigmas: torch.Tensor) -> tuple[torch.Tensor, OdeJump | None]:
        """Cut ``sigmas`` for ODE-Jump: keep the levels down to the jump step, then go to 0."""
        jump_sigma, jump_step = self.config.jump_sigma, self.config.jump_step
        if jump_sigma is None and jump_step is None:
            return sigmas, None
        levels = sigmas[:-1]  # where the model is called; sigmas[-1] is the terminal level
        if jump_step is not None:
            if jump_step >= len(levels):
                raise ValueError(
                    f"jump_step={jump_step} is outside the schedule: it has {len(levels)} steps "
                    f"(jump_step 0 to {len(levels) - 1})."
                )
            step = jump_step
        else:
            lo, hi = float(levels[-1]), float(levels[0])
            tol = 1e-9 * hi
            if not lo - tol <= jump_sigma <= hi + tol:
                raise ValueError(
                    f"jump_sigma={jump_sigma:g} is outside the schedule: its noise levels run from {hi:.6g} "
                    f"down to {lo:.6g}. Choose jump_sigma in that range (or jump_step)."
                )
            step = int((levels <= jump_sigma + tol).nonzero()[0])
        cut = torch.cat([sigmas[: step + 1], sigmas.new_zeros(1)])
        nfe, full = len(self.call_sigmas(cut)) - 1, len(self.call_sigmas(sigmas)) - 1
        jump = OdeJump(step=step, sigma=float(sigmas[step]), nfe=nfe, nfe_saved=full - nfe)
        logger.info(
            f"ODE-Jump: the run returns the denoiser output at sigma={jump.sigma:.4g} (step {step}) after "
            f"{nfe} model calls, saving {jump.nfe_saved} of {full}."
        )
        return cut, jump

    # ----------------------------------------------------------------------------------------------
    # the VP interface
    # ----------------------------------------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity: the pipeline's sample is already the VP model input."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> GeoSchedulerOutput | tuple:
        """Advance ``sample`` by one step of the solver.

        Args:
            model_output: the model's prediction at ``(sample, timestep)`` (see ``prediction_type``).
            timestep: the current timestep (from ``self.timesteps``).
            sample: the current sample, in the pipeline's VP coordinates.
            generator: random generator for stochastic solvers.
            variance_noise: explicit standard-normal noise for stochastic solvers (overrides ``generator``).
            return_dict: return a :class:`GeoSchedulerOutput` (else a tuple, ``prev_sample`` first).
        """
        if self.num_inference_steps is None:
            raise ValueError(
                f"{type(self).__name__}.step called before set_timesteps; call set_timesteps first."
            )
        if self._step_index is None:
            self._init_step_index(timestep)
        index = self._step_index
        if index >= len(self.timesteps):
            raise ValueError(
                f"step called {index + 1} times but the schedule has {len(self.timesteps)} model calls; "
                "call set_timesteps again to start a new run."
            )
        if variance_noise is not None and variance_noise.shape != sample.shape:
            raise ValueError(
                f"variance_noise has shape {tuple(variance_noise.shape)}, expected {tuple(sample.shape)}."
            )
        self._check_finite(model_output, index)

        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        sigma, sigma_next = float(self.sigmas[index]), float(self.sigmas[index + 1])
        alpha = self.parameterization.alpha(sigma)
        y = sample.to(dtype) * (1.0 / alpha)
        denoised = denoised_from_y(model_output.to(dtype), y, alpha, sigma, self.config.prediction_type)

        def noise() -> torch.Tensor:
            if variance_noise is not None:
                return variance_noise.to(device=y.device, dtype=dtype)
            return randn_tensor(y.shape, generator=generator, device=y.device, dtype=dtype)

        if self.ode_jump is not None and index == len(self.timesteps) - 1:
            # ODE-Jump: the Euler step to sigma = 0 returns D exactly
            y_next = pred_original = self.jump_output(y, denoised, sigma)
        else:
            y_next, pred_original = self.solver_step(y, denoised, sigma, sigma_next, noise)
        prev_sample = y_next.mul(self.parameterization.alpha(sigma_next)).to(sample.dtype)
        pred_original = pred_original.to(sample.dtype)
        self._step_index = index + 1
        if not return_dict:
            return (prev_sample, pred_original)
        return GeoSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original)

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
        """VP forward process ``alpha * (x0 + sigma * noise)`` at the noise level of ``timesteps``.

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
        sigma = sigma.to(device=original_samples.device, dtype=dtype)
        sigma = sigma.reshape(-1, *([1] * (original_samples.ndim - 1)))
        x0, n = original_samples.to(dtype), noise.to(device=original_samples.device, dtype=dtype)
        return (self.parameterization.alpha(sigma) * (x0 + sigma * n)).to(original_samples.dtype)

    def _sigma_at_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        if self.sigmas is not None:
            matches = (self.timesteps.cpu() == timestep.to(torch.float32)).nonzero()
            if len(matches):
                return self.sigmas[int(matches[0])]
        return self.parameterization.sigma_of(timestep.reshape(1).to(torch.float64))[0]

    def get_velocity(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The v-prediction target ``alpha * noise - alpha * sigma * x0`` at training ``timesteps``."""
        sigma = self.parameterization.sigma_of(torch.as_tensor(timesteps).reshape(-1).cpu().to(torch.float64))
        sigma = sigma.to(sample.device, torch.float32).reshape(-1, *([1] * (sample.ndim - 1)))
        alpha = self.parameterization.alpha(sigma)
        return (alpha * noise - alpha * sigma * sample).to(sample.dtype)


def _check_jump(jump_sigma, jump_step) -> None:
    if jump_sigma is not None and jump_step is not None:
        raise ValueError("Pass at most one of jump_sigma and jump_step (ODE-Jump), not both.")
    if jump_sigma is not None:
        if isinstance(jump_sigma, bool) or not isinstance(jump_sigma, (int, float, np.floating)):
            raise TypeError(f"jump_sigma must be a number (a noise level sigma), got {jump_sigma!r}.")
        if not np.isfinite(jump_sigma) or jump_sigma <= 0:
            raise ValueError(f"jump_sigma must be a finite noise level > 0, got {jump_sigma}.")
    if jump_step is not None:
        if isinstance(jump_step, bool) or not isinstance(jump_step, (int, np.integer)):
            raise TypeError(f"jump_step must be an int (a solver step index), got {jump_step!r}.")
        if jump_step < 0:
            raise ValueError(f"jump_step must be >= 0, got {jump_step}.")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {list(choices)}.")


def _as_decreasing(name: str, values) -> torch.Tensor:
    t = torch.as_tensor(values if not isinstance(values, torch.Tensor) else values.detach().cpu())
    t = t.to(torch.float64).reshape(-1)
    if len(t) == 0:
        raise ValueError(f"`{name}` is empty.")
    if not torch.isfinite(t).all():
        raise ValueError(f"`{name}` contains NaN or inf: {t.tolist()}.")
    if (t < 0).any():
        raise ValueError(f"`{name}` must be non-negative, got {t.tolist()}.")
    if len(t) > 1 and not (t[1:] < t[:-1]).all():
        raise ValueError(f"`{name}` must be strictly decreasing (from noise to data), got {t.tolist()}.")
    return t

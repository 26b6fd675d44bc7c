"""Projection-corrected DDIM: the gradient-estimation sampler of Permenter & Yuan (arXiv 2306.04848)."""

from __future__ import annotations

import torch

from ..schedules import append_terminal
from ..schedules.flow import flow_sigma, shift_fraction
from ..schedules.log_linear import LOG_LINEAR_ENDS, flow_log_linear_sigmas, log_linear_timesteps
from ..solvers.gradient_estimation import (
    GEState,
    gradient_estimation_call,
)
from .base import SIGMA_RANGE_RTOL, GeoScheduler, NoiseSource, scheduler_config
from .options import Choice, Real, warn_unused

SCHEDULES = ("log-linear", "spacing")
CORRECTIONS = ("noise", "velocity")
DEFAULT_START_SIGMA_CAP = 40.0  # the start sigma of the paper's CIFAR-10 runs (authors' experiment code)


class ProjectionDDIMScheduler(GeoScheduler):
    """The gradient-estimation (GE) sampler of Permenter & Yuan, "Interpreting and Improving Diffusion Models
    from an Optimization Perspective" (ICML 2024, arXiv 2306.04848): DDIM whose noise prediction is corrected
    with the previous one, ``eps_bar_k = gamma * eps_k + (1 - gamma) * eps_{k+1}`` (eq. 12, Algorithm 2),
    on the paper's log-linear schedule.

    DDIM is approximate gradient descent on the squared distance to the data manifold; two successive noise
    predictions estimate the same gradient, so their extrapolation cancels the error of the older one. The
    first step of a run is plain DDIM, every later step uses the raw previous eps (for every prediction type,
    after conversion to eps; with classifier-free guidance, the guided eps). ``pred_original_sample`` is the
    corrected projection ``y - sigma * eps_bar`` (on a final jump to sigma = 0, the returned ``D``).

    Args:
        gamma: the correction weight (> 0). 1 is DDIM, 2 the paper's default ("best across many datasets and
            numbers of steps"). Kept as the default by measurement (``docs/bench_projection_ddim.md``): on
            our benchmark 2 has the lowest ODE error at NFE 5-6 on both configs (at every NFE on the pixel
            config); 1.75 trades some of it for a lower Frechet distance at NFE 8-10.
        mu: noise injection in [0, 1) (Appendix A): 0 is deterministic, 1/2 is DDPM-like (equal to
            Euler-ancestral for ``gamma = 1``). Uses ``generator`` / ``variance_noise`` of ``step``. With
            ``mu > 0`` the correction compares the new eps with the one the previous step implies at the new
            point, injected noise included (:class:`~diffusers_geo.solvers.gradient_estimation.GEState`), so
            that ``gamma`` extrapolates the change of the denoiser and not the noise.
        schedule: ``"log-linear"`` (the paper's: constant step size ``1 - sigma_next / sigma`` from
            ``start_sigma``, every sigma snapped up to a trained timestep; on a flow-matching model from the
            first level after pure noise, :func:`~diffusers_geo.schedules.log_linear.flow_log_linear_sigmas`)
            or ``"spacing"`` (the shared ``timestep_spacing``; the default on flow models, see
            ``flow_defaults``: the log-linear schedule has 0.39-0.48x the best deterministic built-in's ODE
            error on the mixture problem but 1.6x on the trained flow model at NFE 4, ``docs/flow_matching.md``). ``use_karras_sigmas`` / ``use_exponential_sigmas`` / ``use_beta_sigmas``,
            when set, take precedence, and custom ``timesteps=`` / ``sigmas=`` are always used as given.
        start_sigma: first sigma of the log-linear schedule (at most the model's largest sigma ``sigma_max``:
            a larger one is an error, it was clamped). ``None`` (default): the model's largest sigma,
            capped at 40, the paper's CIFAR-10 start (``DEFAULT_START_SIGMA_CAP``): 14.6 for Stable Diffusion
            betas, 40 for the pixel DDPM betas (sigma_max 157). The paper's other starts are 8.35 (Stable
            Diffusion) and 80 (CelebA). Chosen by measurement on the benchmark: above 40 the noised data is
            still Gaussian to within the sampling noise, and skipping 157 -> 40 lowers the ODE error at NFE
            5-6 and the Frechet distance at NFE 5 (``docs/projection_ddim.md``); a start below sigma_max on Stable
            Diffusion betas (8.35) costs distribution accuracy, since N(0, I) no longer matches the noised
            data there.
        log_linear_end: last sigma at which the model is called: ``"geometric-mean"`` (default,
            ``sqrt(sigma(T // N) * sigma(0))``, the paper's CIFAR-10/CelebA schedule; about half the ODE error
            of ``"ddim"`` at NFE 5 on both benchmark configs) or ``"ddim"`` (``sigma(T // N)``, the authors'
            diffusers scheduler for Stable Diffusion).
        correction: what eq. 12 blends. ``"noise"`` (default, the paper's): the noise prediction ``eps``.
            ``"velocity"`` (flow-matching models only, ``mu = 0``): the flow velocity ``v = eps - D`` in the
            model's own coordinates, as ComfyUI's ``gradient_estimation`` does on flow models
            (:func:`~diffusers_geo.solvers.gradient_estimation.velocity_corrected_epsilon`); it reproduces
            ComfyUI's samples on the same sigmas and noise (``scripts/comfyui_parity.py``). On
            variance-preserving models ComfyUI samples in sigma coordinates, where its correction is the
            paper's. Kept as an option by measurement: on the flow benchmark's images problem ``"velocity"``
            has 9-24 % more ODE error than ``"noise"`` at NFE 5-10 (SD3 and Flux), elsewhere within 3 %
            (``docs/flow_matching.md``).

    The last step goes to ``final_sigmas_type``. ``"zero"`` (default) jumps to sigma = 0 and returns the
    denoiser output ``D`` of the last model call, without the correction (as ComfyUI's
    ``gradient_estimation`` does; on the benchmark this gives a lower Frechet distance than returning the
    corrected ``y - sigma * eps_bar``, at equal or lower ODE error). ``"sigma_min"`` stops at the noise level
    of timestep 0 with the correction applied, as the paper does. Takes every other option of
    :class:`GeoScheduler`.
    """

    #: on flow models the pipeline's spacing, Flux's "trailing": worst case over the benchmark suite and the
    #: trained flow model 1.56x the best deterministic built-in's ODE error (0.87x on the trained model at
    #: NFE 4), against 1.67x for the log-linear schedule, which wins on the benign mixture (0.39-0.48x) but
    #: loses on the trained model (1.6x at NFE 4) (docs/flow_matching.md)
    flow_defaults = {"timestep_spacing": "trailing", "schedule": "spacing"}

    options = {
        "gamma": Real(0.0, low_open=True, hint="(1 is DDIM, 2 the paper's default)"),
        "mu": Real(0.0, 1.0, high_open=True, hint="(0 deterministic, 0.5 DDPM-like)"),
        "schedule": Choice(SCHEDULES),
        "start_sigma": Real(0.0, low_open=True, optional=True, hint="(None: min(sigma_max, 40))"),
        "log_linear_end": Choice(LOG_LINEAR_ENDS),
        "correction": Choice(CORRECTIONS),
    }

    @scheduler_config
    def __init__(
        self,
        gamma: float = 2.0,
        mu: float = 0.0,
        schedule: str = "log-linear",
        start_sigma: float | None = None,
        log_linear_end: str = "geometric-mean",
        correction: str = "noise",
        **base_config,
    ):
        if correction == "velocity" and mu != 0:
            raise ValueError(
                f"correction='velocity' (ComfyUI's deterministic flow variant) cannot inject noise, got mu={mu}. "
                "Use correction='noise' with mu > 0, or mu=0."
            )
        super().__init__(**base_config)
        if correction == "velocity" and not self.is_flow_matching:
            raise ValueError(
                "correction='velocity' blends a flow-matching model's velocity, but prediction_type="
                f"{self.config.prediction_type!r} is a variance-preserving model's (where ComfyUI's correction "
                "is the paper's). Use correction='noise' (the default)."
            )
        if start_sigma is not None and not self.is_flow_matching:
            top = self.parameterization.sigma_max
            if start_sigma > top * (1 + SIGMA_RANGE_RTOL):
                raise ValueError(
                    f"start_sigma={start_sigma:g} is above the model's largest noise level sigma_max={top:.6g} "
                    "(from its betas), where the log-linear schedule cannot start: pass start_sigma <= "
                    f"{top:.6g}, or None for min(sigma_max, {DEFAULT_START_SIGMA_CAP:g})."
                )
        self._warn_unused(schedule, start_sigma, log_linear_end)

    def _warn_unused(self, schedule: str, start_sigma: float | None, log_linear_end: str) -> None:
        """The log-linear schedule's options where it is not used (a saved config of another mode, or a
        pipeline config's Karras flag, carries them): with ``schedule="spacing"``, with a sigma respacing
        (which takes precedence), and ``start_sigma`` on a flow model (its schedule starts at pure noise)."""
        name = type(self).__name__
        unused = {"start_sigma": (start_sigma, None), "log_linear_end": (log_linear_end, "geometric-mean")}
        respacing = self._respacing()
        if schedule == "spacing":
            mode, fix = (
                "with schedule='spacing'",
                "it shapes the log-linear schedule; pass schedule='log-linear'",
            )
        elif respacing is not None:
            mode = f"with use_{respacing}_sigmas=True, which takes precedence over the log-linear schedule"
            fix = f"pass use_{respacing}_sigmas=False for the log-linear schedule"
        elif self.is_flow_matching:
            unused = {"start_sigma": unused["start_sigma"]}
            mode = "on a flow-matching model (its log-linear schedule starts at the first level after pure noise)"
            fix = "the flow log-linear schedule is set by log_linear_end alone"
        else:
            return
        for option, (value, default) in unused.items():
            if value != default:
                warn_unused(name, option, value, mode, f"{fix}, or leave {option} at {default!r}")

    @property
    def stochastic(self) -> bool:
        """Whether ``step`` injects noise (``mu > 0``)."""
        return self.config.mu > 0

    @property
    def start_sigma(self) -> float:
        """The first sigma of the log-linear schedule (before snapping up to a trained timestep)."""
        if self.config.start_sigma is not None:
            return float(self.config.start_sigma)
        return min(self.parameterization.sigma_max, DEFAULT_START_SIGMA_CAP)

    def reset_state(self) -> None:
        self._state: GEState | None = None
        self._state_index: int | None = None

    def schedule_sigmas(self, sigmas: torch.Tensor, given: str) -> torch.Tensor:
        """Replace the spaced schedule by the paper's log-linear one (unless custom or respaced)."""
        cfg = self.config
        respaced = cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas
        if cfg.schedule != "log-linear" or respaced or given != "steps":
            return sigmas
        if self.is_flow_matching:
            # the model's smallest level: FlowMatchEuler's table ends at t = 1 (s = 1 / T), shifted
            shift = cfg.flow_shift if cfg.use_flow_sigmas else cfg.shift
            first = torch.tensor([1.0 / cfg.num_train_timesteps], dtype=torch.float64)
            sigma_min = float(flow_sigma(shift_fraction(first, shift))[0])
            return flow_log_linear_sigmas(sigmas, sigma_min, cfg.log_linear_end)
        train_sigmas = self.parameterization.train_sigmas
        t = log_linear_timesteps(len(sigmas) - 1, train_sigmas, self.start_sigma, cfg.log_linear_end)
        return append_terminal(train_sigmas[t], float(sigmas[-1]))

    def solver_step(
        self, y: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, noise: NoiseSource
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if sigma_next == 0:  # the jump to the data returns D itself, uncorrected (ComfyUI's finish)
            return denoised, denoised
        index, cfg = self._step_index, self.config
        # the previous step of this run; none on a run's first step (plain DDIM)
        previous = self._state if self._state_index == index - 1 else None
        y_next, x0_bar, self._state = gradient_estimation_call(
            y, denoised, sigma, sigma_next, previous, cfg.gamma, cfg.mu, noise, cfg.correction
        )
        self._state_index = index
        return y_next, x0_bar

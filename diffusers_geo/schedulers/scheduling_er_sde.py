"""ERSDEScheduler: ER-SDE-Solver 1/2/3 (Cui et al., arXiv 2309.06169) as a diffusers scheduler."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..solvers.er_sde import (
    DEFAULT_NOISE_SCALE,
    INFINITE_CHECK_SIGMA,
    NOISE_SCALES,
    QUADRATURES,
    ERSDECoefficients,
    er_sde_multistep,
    inadmissible_range,
    log_phi_from_callable,
    ratio_at_infinity,
    schedule_coefficients,
    with_eta,
)
from .base import GeoScheduler, NoiseSource, scheduler_config
from .options import Choice, Int, Real, warn_unused


class ERSDEScheduler(GeoScheduler):
    """ER-SDE-Solver (Cui et al., "Elucidating the Solution Space of Extended Reverse-Time SDE for Diffusion
    Models", arXiv 2309.06169): a stochastic multistep solver of the extended reverse-time SDE, one model
    evaluation per step, orders 1-3.

    The step is the exact solution of the ER SDE (paper eq. 10/11) with the data prediction expanded to
    order ``solver_order`` in the VE noise level ``sigma`` (Sec. 3.3, Algorithms 1-3); the derivatives are
    backward differences of past data predictions (:func:`~diffusers_geo.solvers.er_sde.er_sde_step`; the
    scheduler runs the same update as weights on the stored outputs,
    :func:`~diffusers_geo.solvers.er_sde.history_weights`). Every coefficient depends on the schedule
    only and is computed once in ``set_timesteps``. The first steps of a run use lower orders (warm-up),
    and the final step to ``sigma = 0`` returns the data prediction without noise. With
    ``noise_scale="ode"`` and ``solver_order=1`` it is DDIM; with ``"reverse-sde"`` at order 1 it is DDPM
    ancestral sampling (DDIM with eta = 1).

    Args:
        solver_order: 1, 2 or 3 (ER-SDE-Solver-1/2/3).
        noise_scale: the noise scale function phi(sigma) (paper Sec. 3.1; official ``func_type`` in brackets):
            ``"ode"`` phi = sigma (1, deterministic), ``"reverse-sde"`` sigma^2 (2, the original reverse
            SDE), ``"exp-inverse"`` sigma (e^{-1/sigma} + 10) (3), ``"power-1.5"`` (4), ``"power-2.5"``
            (5), ``"log-power"`` sigma^0.9 log10(1 + 100 sigma^1.5) (6; inadmissible above sigma ~ 1022),
            ``"exp-power"`` sigma (e^{sigma^0.3} + 10) (7, the paper's default "ER SDE 5": stochastic at
            high noise, nearly an ODE at low noise). A callable ``phi(sigma_tensor) -> tensor`` is accepted
            too (it is not serialisable: the saved config records ``"custom"``).
            phi must be admissible on the schedule — its elasticity d log phi / d log sigma >= 1, i.e. the
            injected noise variance sigma_t^2 - r^2 sigma_s^2 >= 0 — else ``set_timesteps`` raises.
        eta: scales the diffusion term: phi is replaced by sigma^(1 - eta) phi^eta, so ``h^2 -> eta h^2``
            (ComfyUI's "reverse-time SDE" sigma^(1 + eta) is ``noise_scale="reverse-sde"`` with this eta).
            ``eta = 0`` is the probability-flow ODE whatever ``noise_scale``; ``eta = 1`` leaves phi as is.
        s_noise: multiplies the injected noise (1 keeps the marginals exact; 0 keeps phi's drift but adds
            no noise, which is *not* the ODE unless phi = sigma).
        quadrature: rule for the integrals I1, I2 of the order-2/3 coefficients: ``"riemann-100"`` (the
            official code's left Riemann sum), ``"riemann-200"`` (ComfyUI's), ``"gauss-legendre"`` (32
            points in log sigma, exact to round-off). Default ``"gauss-legendre"``: measured against adaptive
            quadrature on the paper's 20-step EDM grid, the Riemann rules are off by up to ~1 % (C1) and ~6 %
            (C2) with 100 points and half that with 200, while Gauss-Legendre agrees to 1e-9
            (``tests/test_er_sde.py::test_quadrature_rules``); the coefficients are computed once in
            ``set_timesteps``, so accuracy costs nothing at sampling time. On the exact-denoiser benchmark the
            gain in image quality is inside the seed noise (``docs/er_sde.md``): the rule matters for fidelity
            to the equations. Use the Riemann rules only to reproduce the official code or ComfyUI.
        **base_config: every option of :class:`GeoScheduler` (schedule, spacing, Karras sigmas, prediction
            type, ``final_sigmas_type``, ...).

    The default schedule is the pipeline's own (its ``timestep_spacing``, no Karras sigmas): on the
    exact-denoiser benchmark at NFE 5-10 it beats Karras (rho = 7), exponential (log-linear) sigmas and
    "trailing" spacing on both the SD and the pixel DDPM config; Karras sigmas spend the first steps at a
    very large sigma_max (157 on the pixel config), where a stochastic step wastes its noise
    (``docs/er_sde.md``).
    """

    #: on flow models: worst case over the benchmark suite (SD3 config, NFE 5-10) 1.04x the best stochastic
    #: built-in's FD with "trailing" against 2.21x with "linspace" (docs/flow_matching.md)
    flow_defaults = {"timestep_spacing": "trailing"}

    options = {
        "solver_order": Int(1, 3, hint="(ER-SDE-Solver-1/2/3)"),
        "eta": Real(0.0, hint="(0 is the probability-flow ODE, 1 leaves phi as is)"),
        "s_noise": Real(0.0),
        "quadrature": Choice(QUADRATURES),
    }

    @scheduler_config
    def __init__(
        self,
        solver_order: int = 3,
        noise_scale: str | Callable = DEFAULT_NOISE_SCALE,
        eta: float = 1.0,
        s_noise: float = 1.0,
        quadrature: str = "gauss-legendre",
        **base_config,
    ):
        if isinstance(noise_scale, str):
            if noise_scale not in NOISE_SCALES:
                extra = " (a callable phi cannot be restored from a saved config: pass it again)"
                raise ValueError(
                    f"Unknown noise_scale {noise_scale!r}; valid names: {sorted(NOISE_SCALES)}, "
                    "or pass a callable phi(sigma)." + (extra if noise_scale == "custom" else "")
                )
            self._log_phi = NOISE_SCALES[noise_scale]
        elif callable(noise_scale):
            self._log_phi = log_phi_from_callable(noise_scale)
        else:
            raise TypeError(f"noise_scale must be a name or a callable phi(sigma), got {noise_scale!r}.")
        self._warn_unused(solver_order, noise_scale, eta, s_noise, quadrature)
        super().__init__(**base_config)
        if not isinstance(noise_scale, str):
            self.register_to_config(noise_scale="custom")
        self._log_phi = with_eta(self._log_phi, float(eta))

    def _warn_unused(self, solver_order, noise_scale, eta, s_noise, quadrature) -> None:
        """Options without effect in the chosen mode (a saved config of another mode carries them): the
        quadrature at order 1 (no integrals), ``eta`` with ``noise_scale="ode"`` (phi = sigma whatever eta),
        ``noise_scale`` at ``eta = 0`` (the ODE whatever phi), ``s_noise`` when no noise is drawn. A 0 that
        agrees with a deterministic mode (``eta``, ``s_noise``; ComfyUI's ODE preset) is not warned about."""
        name = type(self).__name__
        if solver_order == 1 and quadrature != "gauss-legendre":
            fix = (
                "it computes the order-2/3 coefficients; leave it at 'gauss-legendre', or raise solver_order"
            )
            warn_unused(name, "quadrature", quadrature, "at solver_order=1", fix)
        deterministic = None
        if noise_scale == "ode":
            deterministic = "with noise_scale='ode' (phi = sigma, the probability-flow ODE)"
            if eta not in (0, 1):
                fix = "sigma^(1 - eta) phi^eta is sigma for every eta; leave eta at 1, or pick another noise_scale"
                warn_unused(name, "eta", eta, deterministic, fix)
        elif eta == 0:
            deterministic = "at eta=0 (the probability-flow ODE whatever phi)"
            if isinstance(noise_scale, str) and noise_scale != DEFAULT_NOISE_SCALE:
                fix = f"leave noise_scale at {DEFAULT_NOISE_SCALE!r}, or raise eta above 0"
                warn_unused(name, "noise_scale", noise_scale, deterministic, fix)
        if deterministic is not None and s_noise not in (0, 1):
            warn_unused(
                name, "s_noise", s_noise, deterministic, "no noise is drawn; leave s_noise at 1 (or 0)"
            )

    @property
    def stochastic(self) -> bool:
        """Whether the sampler injects noise (``False`` for the ODE, ``eta = 0`` or ``s_noise = 0``)."""
        cfg = self.config
        return cfg.noise_scale != "ode" and cfg.eta > 0 and cfg.s_noise > 0

    def reset_state(self) -> None:
        """Forget the multistep history."""
        self._history: list[tuple[float, torch.Tensor]] = []

    def plan(self, sigmas: torch.Tensor) -> None:
        """Refuse a noise scale that is inadmissible on the schedule, and precompute every step's
        coefficients (they depend on the schedule only)."""
        sigmas = sigmas.tolist()
        finite = [s for s in sigmas if 0 < s < math.inf]
        # from sigma = inf (a flow model's first step) phi must be admissible all the way up: checked to
        # INFINITE_CHECK_SIGMA, beyond which ratio_at_infinity reads the limit
        hi = max(finite, default=0.0)
        if math.inf in sigmas:
            hi = max(hi, INFINITE_CHECK_SIGMA)
            if not math.isfinite(ratio_at_infinity(self._log_phi)):
                raise ValueError(
                    f"noise_scale {self.config.noise_scale!r} has no limit sigma / phi(sigma) as sigma -> inf, "
                    "which the first step of a flow-matching run (from pure noise, sigma = inf) needs. Use "
                    "another noise_scale (the default 'exp-power' serves every schedule)."
                )
        bad = inadmissible_range(self._log_phi, min(finite), hi) if finite else None
        if bad is not None:
            lo, hi, worst = bad
            raise ValueError(
                f"noise_scale {self.config.noise_scale!r} (eta={self.config.eta}) is not admissible for sigma "
                f"in [{lo:.4g}, {hi:.4g}] of this schedule: its elasticity d log phi / d log sigma falls to "
                f"{worst:.3f} < 1, so the noise variance sigma_t^2 - r^2 sigma_s^2 would be negative "
                "(ER-SDE, arXiv 2309.06169, Sec. 3.1). Use a schedule with a smaller sigma_max or another "
                "noise_scale."
            )
        self._coefficients: list[ERSDECoefficients] = schedule_coefficients(
            self._log_phi, sigmas, self.config.quadrature
        )

    def solver_step(
        self, y: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, noise: NoiseSource
    ) -> tuple[torch.Tensor, torch.Tensor]:
        coeffs = self._coefficients[self._step_index]
        # warm-up: order 1, 2, then solver_order as the history fills (the final step to 0 returns D)
        self._history = [(sigma, denoised), *self._history[: self.config.solver_order - 1]]
        y_next = er_sde_multistep(
            y, self._history, coeffs, noise if self.stochastic else None, self.config.s_noise
        )
        return y_next, denoised

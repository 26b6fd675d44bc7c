"""Every bad input gets a clear error before any sampling, for every registered scheduler (issue 14).

Each case names the option, the value and a phrase of the fix; ``solver_step`` is replaced by a function
that fails the test, so an error raised only after the solver ran (a NaN, a broadcast, an IndexError) does
not count. Numbered as in the issue: 1 shapes, 2 foreign configs, 3 override typos, 4 config values,
5 sigma ranges and offsets, 6 types, 7 strict JSON, 8 timesteps outside the schedule, 9 flow matching."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from diffusers_geo import SCHEDULERS, GeoScheduler, load_scheduler
from diffusers_geo.registry import scheduler_names
from diffusers_geo.schedulers.options import Real
from diffusers_geo.testing import DDPM_BETAS, OWN_OVERRIDES, SD_BETAS

NAMES = scheduler_names()  # one name per class
SHARED = set(inspect.signature(GeoScheduler.__init__).parameters)


@pytest.fixture(autouse=True)
def no_sampling(monkeypatch):
    """Fail the test if any case reaches the solver."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} started sampling on bad input")

    for cls in set(SCHEDULERS.values()):
        monkeypatch.setattr(cls, "solver_step", refuse)


def own_options(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - SHARED


def scheduled(name: str, steps: int = 5, **config) -> GeoScheduler:
    scheduler = load_scheduler(name, SD_BETAS, **config)
    scheduler.set_timesteps(steps)
    return scheduler


# ------------------------------------------------------------------------------------------------
# 1. model_output and sample shapes; 8. a first timestep that is not in the schedule
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "output_shape, sample_shape, match",
    [
        (
            (1, 4, 8, 8),
            (4, 4, 8, 8),
            r"model_output has shape \(1, 4, 8, 8\) but sample has shape \(4, 4, 8, 8\)",
        ),
        ((2, 4, 8, 1), (2, 4, 8, 8), r"model_output has shape \(2, 4, 8, 1\)"),
        ((4, 8, 8), (1, 4, 8, 8), r"model_output has shape \(4, 8, 8\)"),
        ((1, 8, 8, 8), (1, 4, 8, 8), "twice the sample's channels"),
    ],
)
def test_step_refuses_mismatched_shapes(name, output_shape, sample_shape, match):
    scheduler = scheduled(name)
    t = scheduler.timesteps[0]
    with pytest.raises(ValueError, match=match):
        scheduler.step(torch.randn(output_shape), t, torch.randn(sample_shape))
    assert scheduler.step_index is None  # nothing advanced


@pytest.mark.parametrize("name", NAMES)
def test_first_step_at_a_timestep_outside_the_schedule(name):
    scheduler = scheduled(name)
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"timestep 123 is not in this schedule.*set_begin_index"):
        scheduler.step(x, 123, x)
    with pytest.raises(ValueError, match="one timestep per call"):
        scheduler.step(x, scheduler.timesteps[:2], x)
    assert scheduler.step_index is None


# ------------------------------------------------------------------------------------------------
# 2. foreign configs keep our defaults; 3. unknown override names
# ------------------------------------------------------------------------------------------------
def test_dpm_solver_order_does_not_leak_into_er_sde(tmp_path):
    from diffusers_geo import ERSDEScheduler

    foreign = DPMSolverMultistepScheduler(solver_order=2).config
    assert ERSDEScheduler.from_config(foreign).config.solver_order == 3
    # ... also as a Hub folder lists it (every value explicit, no record of which were defaults)
    DPMSolverMultistepScheduler(solver_order=2).save_pretrained(tmp_path / "dpm")
    assert ERSDEScheduler.from_pretrained(tmp_path / "dpm").config.solver_order == 3
    # a config saved by ERSDEScheduler itself keeps its value, in memory and on disk
    own = ERSDEScheduler(solver_order=2)
    assert ERSDEScheduler.from_config(own.config).config.solver_order == 2
    own.save_pretrained(tmp_path / "own")
    assert ERSDEScheduler.from_pretrained(tmp_path / "own").config.solver_order == 2
    # an explicit keyword still wins
    assert ERSDEScheduler.from_config(foreign, solver_order=1).config.solver_order == 1


#: options of ours that the source class takes too: its own setting, not taken (None: every option of ours)
SOURCE_SHARES = {
    "DPMSolverMultistepScheduler": {"solver_order"},
    "EulerDiscreteScheduler": set(),
    "OtherGeoScheduler": None,  # a class this process does not know: any of its keys may be its own
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("foreign", sorted(SOURCE_SHARES))
def test_own_options_in_a_foreign_config(name, foreign):
    """An option of ours that the source scheduler has too keeps our default (DPM-Solver's solver_order
    is not ER-SDE's); one the source does not have can only be the caller's and is taken, as diffusers'
    own schedulers take it."""
    cls = SCHEDULERS[name]
    non_default = OWN_OVERRIDES[cls.__name__]
    config = {**SD_BETAS, "timestep_spacing": "trailing", **non_default, "_class_name": foreign}
    scheduler = cls.from_config(config)
    default = cls(**SD_BETAS)
    shared = set(non_default) if SOURCE_SHARES[foreign] is None else SOURCE_SHARES[foreign]
    for key, value in non_default.items():
        assert scheduler.config[key] == (default.config[key] if key in shared else value), key
    assert scheduler.config.timestep_spacing == "trailing"  # the shared schedule keys do come along
    assert scheduler.config.beta_end == SD_BETAS["beta_end"]
    # from the same class, every value comes back
    same = cls.from_config({**config, "_class_name": cls.__name__})
    for key, value in non_default.items():
        assert same.config[key] == value, key


@pytest.mark.parametrize("name", NAMES)
def test_load_scheduler_refuses_unknown_overrides(name):
    with pytest.raises(ValueError, match=r"has no option 'gama'.*Valid options: \[.*'beta_end'"):
        load_scheduler(name, SD_BETAS, gama=1.5)
    with pytest.raises(ValueError, match="Did you mean 'use_karras_sigmas'"):
        load_scheduler(name, SD_BETAS, use_karas_sigmas=True)
    with pytest.raises(TypeError, match="has no option 'gama'"):  # the constructor, too
        SCHEDULERS[name](gama=1.5)


def test_projection_ddim_typo_names_gamma():
    with pytest.raises(ValueError, match="Did you mean 'gamma'"):
        load_scheduler("projection-ddim", DDIMScheduler(**SD_BETAS).config, gama=1.5)


@pytest.mark.parametrize(
    ("config", "options", "match"),
    [
        (
            DDIMScheduler(**SD_BETAS).config,
            {"correction": "velocity"},
            "correction='velocity'.*variance-pres",
        ),
        (
            FlowMatchEulerDiscreteScheduler(shift=3.0).config,
            {"correction": "velocity", "mu": 0.5},
            "correction='velocity'.*mu=0.5.*correction='noise'",
        ),
        (
            FlowMatchEulerDiscreteScheduler(shift=3.0).config,
            {"correction": "eps"},
            "Unknown correction 'eps'",
        ),
    ],
)
def test_projection_ddim_correction_combinations(config, options, match):
    with pytest.raises(ValueError, match=match):
        load_scheduler("projection-ddim", config, **options)


# ------------------------------------------------------------------------------------------------
# 4. config values; 5. sigma ranges and offsets; 6. types — at construction
# ------------------------------------------------------------------------------------------------
SHARED_CASES = [
    (dict(beta_start=-0.1), ValueError, r"beta_start must be a finite number in \(0, 1\), got -0.1"),
    (dict(beta_start=float("nan")), ValueError, "beta_start must be a finite number"),
    (dict(beta_end=1.0), ValueError, r"beta_end must be a finite number in \(0, 1\), got 1.0"),
    (dict(beta_end=0.9999), ValueError, "alphas_cumprod must stay in"),
    (dict(trained_betas=[0.01] * 10), ValueError, "trained_betas has 10 values but num_train_timesteps=1000"),
    (dict(trained_betas=[0.5] * 999 + [1.5]), ValueError, r"trained_betas\[999\] = 1.5"),
    (dict(trained_betas="0.01"), TypeError, "trained_betas must be a sequence"),
    (dict(num_train_timesteps=1000.0), TypeError, "num_train_timesteps must be an int.*pass 1000"),
    (dict(num_train_timesteps=1), ValueError, "num_train_timesteps must be an int >= 2"),
    (dict(use_karras_sigmas="yes"), TypeError, "use_karras_sigmas must be True or False, got 'yes'"),
    (dict(rescale_betas_zero_snr=1), TypeError, "rescale_betas_zero_snr must be True or False"),
    (dict(use_karras_sigmas=True, use_exponential_sigmas=True), ValueError, "Only one of"),
    (dict(use_karras_sigmas=True, sigma_min=0.0), ValueError, "sigma_min must be a finite number > 0"),
    (dict(use_karras_sigmas=True, sigma_min=-1.0), ValueError, "sigma_min must be a finite number > 0"),
    (
        dict(use_karras_sigmas=True, sigma_max=1e9),
        ValueError,
        r"sigma_max=1e\+09 is outside the model's trained",
    ),
    (
        dict(use_karras_sigmas=True, sigma_max=0.001),
        ValueError,
        "sigma_max=0.001 is outside the model's trained",
    ),
    (
        dict(use_karras_sigmas=True, sigma_min=100.0),
        ValueError,
        "sigma_min=100 is outside the model's trained",
    ),
    (dict(use_karras_sigmas=True, sigma_max=float("inf")), ValueError, "sigma_max must be a finite number"),
    (dict(use_karras_sigmas=True, sigma_min=5.0, sigma_max=2.0), ValueError, "must be below sigma_max"),
    (dict(timestep_spacing="leading", steps_offset=2000), ValueError, "steps_offset=2000 must be below"),
    (dict(steps_offset=1.0), TypeError, "steps_offset must be an int"),
    (dict(jump_sigma=float("inf")), ValueError, "jump_sigma must be a finite number > 0"),
    (dict(jump_step=2.0), TypeError, "jump_step must be an int"),
    (dict(prediction_type="flow"), ValueError, "Unknown prediction_type 'flow'"),
    (dict(timestep_spacing="uniform"), ValueError, "Unknown timestep_spacing"),
]

OWN_CASES = {
    "ERSDEScheduler": [
        (dict(solver_order=2.0), TypeError, r"solver_order must be an int in \[1, 3\].*pass 2"),
        (dict(solver_order=4), ValueError, r"solver_order must be an int in \[1, 3\], got 4"),
        (dict(eta=float("inf")), ValueError, "eta must be a finite number >= 0"),
        (dict(eta="0.5"), TypeError, "eta must be a finite number"),
        (dict(s_noise=-1.0), ValueError, "s_noise must be a finite number >= 0"),
        (dict(quadrature="simpson"), ValueError, "Unknown quadrature 'simpson'"),
        (dict(noise_scale=3.0), TypeError, "noise_scale must be a name or a callable"),
    ],
    "GeometricHeunScheduler": [
        (dict(multistep=True, sigma_data=float("inf")), ValueError, "sigma_data must be a finite number > 0"),
        (
            dict(max_multistep_weight=float("inf")),
            ValueError,
            "max_multistep_weight must be .* or None.*no limit",
        ),
        (dict(intermediate_point=1.5), ValueError, r"intermediate_point must be a finite number in \(0, 1\]"),
        (dict(multistep="yes"), TypeError, "multistep must be True or False"),
    ],
    "ProjectionDDIMScheduler": [
        (dict(gamma=float("inf")), ValueError, "gamma must be a finite number > 0"),
        (dict(mu=1.0), ValueError, r"mu must be a finite number in \[0, 1\)"),
        (dict(start_sigma=float("inf")), ValueError, "start_sigma must be a finite number > 0 or None"),
        (dict(schedule="cosine"), ValueError, "Unknown schedule 'cosine'"),
    ],
    "SigmaDDIMScheduler": [],
}


def _cases():
    for name in NAMES:
        cls = SCHEDULERS[name]
        for kwargs, error, match in SHARED_CASES + OWN_CASES[cls.__name__]:
            yield pytest.param(name, kwargs, error, match, id=f"{name}-{'-'.join(map(str, kwargs.items()))}")


def test_every_scheduler_has_its_own_bad_cases():
    assert set(OWN_CASES) == {cls.__name__ for cls in SCHEDULERS.values()}


@pytest.mark.parametrize("name, kwargs, error, match", list(_cases()))
def test_bad_config_is_refused_at_construction(name, kwargs, error, match):
    cls = SCHEDULERS[name]
    with pytest.raises(error, match=match):
        cls(**{**SD_BETAS, **kwargs})
    with pytest.raises(error, match=match):  # the same through from_config (a saved config)
        cls.from_config({**SD_BETAS, **kwargs, "_class_name": cls.__name__})


@pytest.mark.parametrize("name", NAMES)
def test_schedule_errors_name_the_fix(name):
    scheduler = load_scheduler(name, SD_BETAS, timestep_spacing="leading", steps_offset=400)
    scheduler.set_timesteps(2)  # leading timesteps [500, 0] + 400: fine
    with pytest.raises(ValueError, match="steps_offset=400 puts the first of 3 steps past"):  # 666 + 400
        scheduler.set_timesteps(3)
    scheduler = load_scheduler(name, SD_BETAS)
    with pytest.raises(
        ValueError, match=r"calls the model at noise levels \[100.0\] outside its trained range"
    ):
        scheduler.set_timesteps(sigmas=[100.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"noise levels \[0.001\]"):
        scheduler.set_timesteps(sigmas=[1.0, 0.001, 0.0])
    # inside the trained range, up to rounding of its ends (as ComfyUI prints them), it runs
    scheduler = load_scheduler(
        name, SD_BETAS, use_karras_sigmas=True, sigma_min=0.029168, sigma_max=14.614642
    )
    scheduler.set_timesteps(4)
    assert len(set(scheduler.timesteps.tolist())) == len(scheduler.timesteps) or scheduler.order == 2


@pytest.mark.parametrize("name", NAMES)
def test_numpy_scalars_are_accepted_as_plain_numbers(name, tmp_path):
    cls = SCHEDULERS[name]
    checks = cls.option_checks()
    own = OWN_OVERRIDES[cls.__name__]
    given = {k: np.float32(v) if isinstance(checks.get(k), Real) else v for k, v in own.items()}
    given = {k: np.bool_(v) if isinstance(v, bool) else v for k, v in given.items()}
    given.update(
        beta_start=np.float64(0.00085), beta_end=np.float32(0.012), num_train_timesteps=np.int64(1000)
    )
    given.update(use_karras_sigmas=np.bool_(True), beta_schedule="scaled_linear")
    scheduler = cls(**given)
    for key, value in given.items():
        stored = scheduler.config[key]
        assert type(stored) in (bool, int, float, str), (key, type(stored))
        assert stored == (value if isinstance(value, str) else pytest.approx(value)), key
    scheduler.save_config(tmp_path)
    strict_json((tmp_path / "scheduler_config.json").read_text())


# ------------------------------------------------------------------------------------------------
# 7. strict JSON
# ------------------------------------------------------------------------------------------------
def strict_json(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("name", NAMES)
def test_saved_configs_are_strict_json(name, tmp_path):
    cls = SCHEDULERS[name]
    for i, config in enumerate([{}, OWN_OVERRIDES[cls.__name__], {"jump_sigma": 1.0, "sigma_max": 10.0}]):
        cls(**config).save_config(tmp_path / str(i))
        saved = strict_json((tmp_path / str(i) / "scheduler_config.json").read_text())
        assert saved["_class_name"] == cls.__name__


def test_no_limit_is_none_not_infinity(tmp_path):
    from diffusers_geo import GeometricHeunScheduler

    unguarded = GeometricHeunScheduler(multistep=True, max_multistep_weight=None)
    unguarded.save_config(tmp_path)
    assert strict_json((tmp_path / "scheduler_config.json").read_text())["max_multistep_weight"] is None
    assert GeometricHeunScheduler.from_pretrained(tmp_path).config.max_multistep_weight is None


# ------------------------------------------------------------------------------------------------
# 9. flow-matching options that do not fit the model, and bad flow schedules
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_vp_config_with_flow_prediction_is_refused(name):
    """A variance-preserving (beta) schedule with a velocity model would sample noise: refused."""
    for builtin in (DDIMScheduler, DPMSolverMultistepScheduler):
        with pytest.raises(ValueError, match="prediction_type='flow_prediction'.*variance-preserving"):
            SCHEDULERS[name].from_config(
                builtin(prediction_type="epsilon").config | {"prediction_type": "flow_prediction"}
            )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"use_flow_sigmas": True}, "use_flow_sigmas=True is a flow-matching schedule"),
        ({"shift": 3.0}, "shift=3.0 shift.*prediction_type='flow_prediction'"),
        ({"use_dynamic_shifting": True}, "use_dynamic_shifting=True"),
        ({"shift_terminal": 0.1}, "shift_terminal=0.1"),
        ({"prediction_type": "flow_prediction", "shift": 0.0}, "shift must be a finite number > 0"),
        ({"prediction_type": "flow_prediction", "shift": -1.0}, "shift must be a finite number > 0"),
        ({"prediction_type": "flow_prediction", "final_sigmas_type": "sigma_min"}, "final_sigmas_type"),
        ({"prediction_type": "flow_prediction", "sigma_max": 10.0}, "sigma_max=10.0 applies to variance"),
        ({"prediction_type": "flow_prediction", "flow_shift": 3.0}, "flow_shift=3.0 is unused"),
        (
            {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "shift": 3.0},
            "shift=3.0 is unused",
        ),
        ({"prediction_type": "flow_prediction", "shift_terminal": 1.0}, "shift_terminal must be"),
        ({"prediction_type": "flow_prediction", "timestep_spacing": "leading"}, "'leading' is not defined"),
    ],
)
def test_flow_options_that_do_not_fit(name, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SCHEDULERS[name](**options)


def test_invert_sigmas_is_refused():
    config = FlowMatchEulerDiscreteScheduler(invert_sigmas=True).config
    for name in NAMES:
        with pytest.raises(ValueError, match="invert_sigmas=True"):
            SCHEDULERS[name].from_config(config)


@pytest.mark.parametrize("name", NAMES)
def test_bad_flow_set_timesteps(name):
    cls = SCHEDULERS[name]
    flux = cls.from_config(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).config)
    with pytest.raises(ValueError, match="use_dynamic_shifting=True needs `mu`"):
        flux.set_timesteps(8)
    with pytest.raises(ValueError, match="mu must be a finite number"):
        flux.set_timesteps(8, mu=float("nan"))
    sd3 = cls.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    for bad in ([1.5, 0.5], [1.0, 0.5, 0.0], [0.5, -0.1], [0.5, 0.7]):
        with pytest.raises(ValueError, match="sigmas"):
            sd3.set_timesteps(sigmas=bad)
    with pytest.raises(ValueError, match="num_inference_steps=3 but `sigmas` has 2"):
        sd3.set_timesteps(3, sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match=r"timesteps` of a flow-matching model must lie in \(0, 1000\]"):
        sd3.set_timesteps(timesteps=[1200.0, 500.0])
    vp = cls(**SD_BETAS)
    with pytest.raises(ValueError, match="mu=0.5 is the dynamic shift"):
        vp.set_timesteps(8, mu=0.5)
    with pytest.raises(ValueError, match="scale_noise is the flow-matching forward process"):
        vp.scale_noise(torch.zeros(1), torch.tensor([1.0]), torch.zeros(1))
    # nothing was half-built: the scheduler still has no schedule
    assert sd3.num_inference_steps is None


def test_vp_configs_of_builtins_still_load():
    """VP configs of the built-ins (which write their flow keys at their defaults) load as VP models."""
    for builtin in (
        DDIMScheduler,
        EulerDiscreteScheduler,
        DPMSolverMultistepScheduler,
        UniPCMultistepScheduler,
    ):
        for name in NAMES:
            assert load_scheduler(name, builtin(**SD_BETAS).config).config.beta_end == SD_BETAS["beta_end"]


# ------------------------------------------------------------------------------------------------
# options a mode does not use: warned about (a saved config of another mode carries them), and truly unused
# ------------------------------------------------------------------------------------------------
def _sample(scheduler) -> torch.Tensor:
    """A short model-free run (a fixed linear "model"), the same noise for every scheduler."""
    scheduler.set_timesteps(5)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    for t in scheduler.timesteps:
        out = 0.6 * x + float(t) / 2000.0
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


FLOW = dict(prediction_type="flow_prediction", shift=3.0)
UNUSED = [
    # (class name, the mode, the unused option and its value, the phrase naming the mode)
    ("GeometricHeunScheduler", dict(multistep=False), dict(corrector=False), "multistep=False"),
    ("GeometricHeunScheduler", dict(multistep=False), dict(sigma_data=1.0), "multistep=False"),
    ("GeometricHeunScheduler", dict(multistep=False), dict(max_multistep_weight=None), "multistep=False"),
    ("GeometricHeunScheduler", dict(corrector=False), dict(sigma_data=1.0), "corrector=False"),
    ("ERSDEScheduler", dict(solver_order=1), dict(quadrature="riemann-100"), "solver_order=1"),
    ("ERSDEScheduler", dict(noise_scale="ode"), dict(eta=0.5), "noise_scale='ode'"),
    ("ERSDEScheduler", dict(noise_scale="ode"), dict(s_noise=0.5), "noise_scale='ode'"),
    ("ERSDEScheduler", dict(eta=0.0), dict(noise_scale="reverse-sde"), "eta=0"),
    ("ERSDEScheduler", dict(eta=0.0), dict(s_noise=0.5), "eta=0"),
    ("ProjectionDDIMScheduler", dict(schedule="spacing"), dict(start_sigma=8.35), "schedule='spacing'"),
    ("ProjectionDDIMScheduler", dict(schedule="spacing"), dict(log_linear_end="ddim"), "schedule='spacing'"),
    ("ProjectionDDIMScheduler", dict(use_karras_sigmas=True), dict(start_sigma=8.35), "use_karras_sigmas"),
    ("ProjectionDDIMScheduler", dict(**FLOW, schedule="log-linear"), dict(start_sigma=3.0), "flow-matching"),
]


@pytest.fixture
def scheduler_warnings(caplog, monkeypatch):
    monkeypatch.undo()  # these cases sample on purpose (no_sampling is for bad input only)
    caplog.set_level("WARNING", logger="diffusers_geo.schedulers.options")
    return caplog


@pytest.mark.parametrize(("cls_name", "mode", "option", "phrase"), UNUSED)
def test_an_option_the_mode_does_not_use_is_warned_about_and_unused(
    scheduler_warnings, cls_name, mode, option, phrase
):
    cls = next(c for c in SCHEDULERS.values() if c.__name__ == cls_name)
    betas = {} if mode.get("prediction_type") else SD_BETAS
    with_option = cls(**betas, **mode, **option)
    ((name, value),) = option.items()
    (record,) = scheduler_warnings.records
    assert f"{name}={value!r} has no effect" in record.getMessage() and phrase in record.getMessage()
    scheduler_warnings.clear()
    without = cls(**betas, **mode)
    assert not scheduler_warnings.records  # the mode alone, at the defaults, is silent
    assert torch.equal(_sample(with_option), _sample(without))  # ... and the option really does nothing


@pytest.mark.parametrize(
    ("cls_name", "options"),
    [
        ("ERSDEScheduler", dict(eta=0.0, s_noise=0.0)),  # ComfyUI's ODE preset
        ("ERSDEScheduler", dict(noise_scale="ode", eta=0.0)),
        ("ERSDEScheduler", dict(solver_order=2, quadrature="riemann-200")),
        ("GeometricHeunScheduler", dict(multistep=False, intermediate_point=0.5)),
        ("GeometricHeunScheduler", dict(corrector=True, sigma_data=1.0, max_multistep_weight=None)),
        ("ProjectionDDIMScheduler", dict(start_sigma=8.35, log_linear_end="ddim")),
        ("ProjectionDDIMScheduler", dict(schedule="spacing", gamma=1.5)),
    ],
)
def test_options_in_use_are_not_warned_about(scheduler_warnings, cls_name, options):
    cls = next(c for c in SCHEDULERS.values() if c.__name__ == cls_name)
    cls(**SD_BETAS, **options)
    assert not scheduler_warnings.records


@pytest.mark.parametrize(("betas", "sigma_max"), [(SD_BETAS, "14.6146"), (DDPM_BETAS, "157.4")])
def test_start_sigma_above_the_models_sigma_max_is_an_error(betas, sigma_max):
    from diffusers_geo import ProjectionDDIMScheduler

    with pytest.raises(
        ValueError, match=rf"start_sigma=200 is above .* sigma_max={sigma_max}.*start_sigma <="
    ):
        ProjectionDDIMScheduler(**betas, start_sigma=200.0)
    top = ProjectionDDIMScheduler(**betas).parameterization.sigma_max
    assert ProjectionDDIMScheduler(**betas, start_sigma=top).start_sigma == top  # the top itself is fine

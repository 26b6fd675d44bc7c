"""The registry takes its documented name syntax wherever a name is taken, and refuses what is not a config."""

from __future__ import annotations

import logging

import pytest
from diffusers import DPMSolverMultistepScheduler, EDMEulerScheduler, PNDMScheduler

from diffusers_geo import ERSDEScheduler, GeometricHeunScheduler, ProjectionDDIMScheduler
from diffusers_geo.registry import load_scheduler, make_scheduler
from diffusers_geo.testing import SD_BETAS, SD_SCHEDULER_CONFIG

PIPE_CONFIG = PNDMScheduler(**SD_BETAS, steps_offset=1, skip_prk_steps=True).config  # SD 1.x's, in memory


@pytest.mark.parametrize("factory", [load_scheduler, make_scheduler])
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("er-sde:solver_order=2", dict(solver_order=2, use_karras_sigmas=False)),
        ("er-sde-karras", dict(solver_order=3, use_karras_sigmas=True)),
        ("ER_SDE-karras:solver_order=1:noise_scale=ode", dict(solver_order=1, noise_scale="ode")),
        (" projection-ddim:gamma=1.5 ", dict(gamma=1.5)),
        ("gradient-estimation:mu=0.25", dict(mu=0.25)),
    ],
)
def test_the_documented_name_syntax_works_in_every_factory(factory, name, expected):
    scheduler = factory(name, PIPE_CONFIG)
    for key, value in expected.items():
        assert scheduler.config[key] == value, key
    assert scheduler.config.beta_end == SD_BETAS["beta_end"]


@pytest.mark.parametrize("factory", [load_scheduler, make_scheduler])
def test_a_keyword_wins_over_the_name(factory):
    assert factory("er-sde:solver_order=1", PIPE_CONFIG, solver_order=2).config.solver_order == 2


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: load_scheduler("er-sdee", PIPE_CONFIG),
            r"valid names: .*Did you mean 'er-sde'\?.*name:key=value",
        ),
        (lambda: load_scheduler("er-sde-karas", PIPE_CONFIG), r"Did you mean 'er-sde-karras'\?"),
        (lambda: load_scheduler("dpmpp-2m", PIPE_CONFIG), r"diffusers built-in: make_scheduler\('dpmpp-2m'"),
        (
            lambda: make_scheduler("dpmpp-2n", PIPE_CONFIG),
            r"Unknown sampler 'dpmpp-2n'.*Did you mean 'dpmpp-2m'",
        ),
        (lambda: load_scheduler("er-sde:solver_order", PIPE_CONFIG), r"write key=value"),
        (lambda: load_scheduler("er-sde:gama=1", PIPE_CONFIG), r"has no option 'gama'"),
        (lambda: load_scheduler("er-sde+gits", PIPE_CONFIG), r"GITS schedule.*gits_schedule"),
    ],
)
def test_a_refused_name_shows_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("factory", [load_scheduler, make_scheduler])
@pytest.mark.parametrize(
    ("config", "shown"),
    [
        ("er-sde", "str 'er-sde'"),
        (PNDMScheduler(), "a PNDMScheduler instance"),
        (ERSDEScheduler(), "a ERSDEScheduler instance"),
        (3, "int 3"),
        ([("beta_end", 0.012)], "list"),
    ],
)
def test_a_non_config_is_a_type_error_naming_scheduler_config(factory, config, shown):
    with pytest.raises(TypeError, match=rf"got {shown}.*pipe\.scheduler\.config"):
        factory("er-sde", config)


def test_none_is_the_class_defaults():
    assert load_scheduler("er-sde", None).config == ERSDEScheduler().config


@pytest.fixture
def warnings_of_base(caplog):
    caplog.set_level(logging.WARNING, logger="diffusers_geo.schedulers.base")
    return caplog


def dropped(caplog) -> list[str]:
    """The warnings of the rule under test here: an option of ours the source scheduler has too is dropped
    (the other sampler's own options are named by another warning, tests/test_pipeline_families.py)."""
    return [r.getMessage() for r in caplog.records if "own setting and is not taken" in r.getMessage()]


def test_an_own_option_in_a_merged_pipeline_config_is_taken(warnings_of_base):
    """What diffusers' own schedulers do: ``{**pipe.scheduler.config, key: value}`` sets ``key``."""
    merged = ERSDEScheduler.from_config({**PIPE_CONFIG, "quadrature": "riemann-200", "noise_scale": "ode"})
    assert (merged.config.quadrature, merged.config.noise_scale) == ("riemann-200", "ode")
    keyword = ERSDEScheduler.from_config(PIPE_CONFIG, quadrature="riemann-200")
    assert keyword.config.quadrature == "riemann-200"
    saved = {**SD_SCHEDULER_CONFIG, "_class_name": "EulerDiscreteScheduler", "gamma": 1.5}
    assert ProjectionDDIMScheduler.from_config(saved).config.gamma == 1.5
    assert not dropped(warnings_of_base)
    # the shared keys still come along, the source's own keys stay hidden
    assert merged.config.beta_end == SD_BETAS["beta_end"] and merged.config.skip_prk_steps


@pytest.mark.parametrize("saved", [False, True])
def test_an_option_the_source_scheduler_has_too_is_dropped_with_the_keyword_fix(warnings_of_base, saved):
    config = dict(DPMSolverMultistepScheduler(**SD_BETAS, solver_order=2).config)
    if saved:
        config["_class_name"] = "DPMSolverMultistepScheduler"
    scheduler = ERSDEScheduler.from_config({**config, "quadrature": "riemann-100"})
    assert scheduler.config.solver_order == 3  # DPM-Solver's order is not ER-SDE's
    assert scheduler.config.quadrature == "riemann-100"
    (message,) = dropped(warnings_of_base)
    assert "solver_order=2 in the config of DPMSolverMultistepScheduler" in message
    assert "ERSDEScheduler.from_config(config, solver_order=2)" in message
    warnings_of_base.clear()
    assert ERSDEScheduler.from_config(config, solver_order=2).config.solver_order == 2
    assert not dropped(warnings_of_base)  # the keyword given: nothing to warn about


def test_no_warning_for_a_source_default_or_our_default(warnings_of_base):
    ERSDEScheduler.from_config(DPMSolverMultistepScheduler().config)  # solver_order left at its default
    ERSDEScheduler.from_config(DPMSolverMultistepScheduler(solver_order=3).config)  # equals ours
    GeometricHeunScheduler.from_config(EDMEulerScheduler().config)  # sigma_data 0.5 equals ours
    assert not dropped(warnings_of_base)
    # sigma_data is the model's on an EDM config (a shared key, docs/edm.md), not EDMEuler's own option
    edm = GeometricHeunScheduler.from_config(EDMEulerScheduler(sigma_data=1.0).config)
    assert (edm.config.preconditioning, edm.config.sigma_data) == ("edm", 1.0)
    assert not dropped(warnings_of_base)


def test_an_unknown_source_class_keeps_our_defaults_with_a_warning(warnings_of_base):
    config = {**SD_BETAS, "_class_name": "SomeoneElsesScheduler", "quadrature": "riemann-100"}
    assert ERSDEScheduler.from_config(config).config.quadrature == "gauss-legendre"
    assert "quadrature='riemann-100' in the config of SomeoneElsesScheduler" in warnings_of_base.text


@pytest.mark.parametrize("bad", ["my-folder", 3, None, ["a"]])
def test_from_config_of_a_non_config_is_a_type_error_naming_the_fix(bad):
    with pytest.raises(TypeError, match=r"takes a scheduler config .* pass pipe\.scheduler\.config"):
        ERSDEScheduler.from_config(bad)


def test_from_config_of_a_scheduler_instance_says_to_pass_its_config():
    with pytest.raises(TypeError, match=r"DPMSolverMultistepScheduler instance, not its config"):
        ERSDEScheduler.from_config(DPMSolverMultistepScheduler())
    assert ERSDEScheduler.from_config(DPMSolverMultistepScheduler().config).config.solver_order == 3

"""The examples run offline."""

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_swap_scheduler_example(tmp_path):
    out = load("swap_scheduler").main(["--steps", "3", "--out", str(tmp_path / "x.png")])
    assert Image.open(out).size == (8, 8)


def test_truncated_prior_example(tmp_path):
    plot = tmp_path / "mismatch.png"
    results = load("truncated_prior").main(
        ["--steps", "3", "--samples", "200", "--plot", str(plot), "--pipeline"]
    )
    assert plot.stat().st_size > 0
    # 3 steps from the fitted prior at sigma_T = 1 beat 3 steps from pure noise at sigma_max
    assert results["truncated/3"] < results["noise/3"]


@pytest.fixture(scope="module")
def saved_pipelines(tmp_path_factory):
    """Tiny pipelines saved to local folders: the examples load them like real checkpoints (--model)."""
    from diffusers_geo.testing import tiny_sd_pipeline, tiny_sdxl_pipelines

    root = tmp_path_factory.mktemp("models")
    paths = {}
    for kind, prediction in (("txt2img", "epsilon"), ("txt2img", "v_prediction"), ("inpaint", "epsilon")):
        path = root / f"sd-{kind}-{prediction}"
        tiny_sd_pipeline(kind, prediction_type=prediction).save_pretrained(path)
        paths[kind, prediction] = path
    base, refiner = tiny_sdxl_pipelines()
    base.save_pretrained(root / "sdxl-base")
    refiner.save_pretrained(root / "sdxl-refiner")
    paths["sdxl"] = root / "sdxl-base", root / "sdxl-refiner"
    return paths


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])  # SD 1.5-like and SD 2.1-like
def test_latent_txt2img_from_a_saved_checkpoint(saved_pipelines, tmp_path, prediction):
    model = saved_pipelines["txt2img", prediction]
    out = tmp_path / "x.png"
    result = load("latent_diffusion").main(
        ["txt2img", "--model", str(model), "--steps", "4", "--out", str(out)]
    )
    assert result["steps"] == {"txt2img": 4} and Image.open(out).size == result["size"]


@pytest.mark.parametrize("mode,scheduler", [("img2img", "er-sde"), ("inpaint", "projection-ddim")])
def test_latent_img2img_and_inpaint(saved_pipelines, tmp_path, mode, scheduler):
    model = saved_pipelines["txt2img" if mode == "img2img" else "inpaint", "epsilon"]
    args = [mode, "--model", str(model), "--scheduler", scheduler, "--steps", "5", "--strength", "0.6"]
    result = load("latent_diffusion").main([*args, "--out", str(tmp_path / "x.png")])
    assert result["steps"] == {mode: 3}  # int(5 * 0.6) steps of the 5-step schedule


def test_latent_sdxl_base_to_refiner_handoff(saved_pipelines, tmp_path):
    base, refiner = saved_pipelines["sdxl"]
    args = [
        "sdxl",
        "--model",
        str(base),
        "--refiner",
        str(refiner),
        "--steps",
        "10",
        "--denoising-end",
        "0.7",
    ]
    result = load("latent_diffusion").main([*args, "--out", str(tmp_path / "x.png")])
    assert result["steps"]["base"] + result["steps"]["refiner"] == 10 and result["steps"]["refiner"] > 0


def test_latent_offline_default_without_guidance(tmp_path):
    args = ["txt2img", "--guidance", "1.0", "--steps", "3", "--out", str(tmp_path / "x.png")]
    assert load("latent_diffusion").main(args)["steps"] == {"txt2img": 3}


FAKE_COMFY_SAMPLING = """
import torch
import comfy.model_sampling


def _euler(model, x, sigmas):
    assert isinstance(model.inner_model.model_patcher.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
        x = denoised + (x - denoised) * (sigmas[i + 1] / sigmas[i])  # flow Euler: x + d (s_next - s)
    return x


def sample_er_sde(model, x, sigmas, disable=None, noise_sampler=None):
    assert noise_sampler(sigmas[0], sigmas[1]).shape == x.shape
    return _euler(model, x, sigmas)


def sample_gradient_estimation(model, x, sigmas, disable=None, ge_gamma=2.0):
    # gradient estimation in the model's own coordinates, from its formula: d = (x - D) / s, the Euler
    # step plus (ge_gamma - 1) (d - d_prev) (s_next - s) from the second step on, D on the step to 0
    d_prev = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            return denoised
        x = x + d * dt if d_prev is None else x + d * dt + (ge_gamma - 1) * (d - d_prev) * dt
        d_prev = d
    return x
"""
FAKE_COMFY_MODEL_SAMPLING = """
import torch


class CONST:
    pass


class ModelSamplingDiscreteFlow(torch.nn.Module):
    def set_parameters(self, shift=1.0):
        self.shift = shift
"""


def test_comfyui_parity_script_runs_against_a_comfy_package(tmp_path):
    """ComfyUI is not installable here: a stand-in ``comfy`` package (flow Euler in place of ComfyUI's ER-SDE,
    gradient estimation written in flow coordinates from its formula) checks that the script's plumbing runs
    and that correction="velocity" agrees with a flow-coordinate sampler; the parity numbers measured with
    ComfyUI's own functions are in docs/flow_matching.md."""
    import subprocess
    import sys

    package = tmp_path / "comfy"
    (package / "k_diffusion").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "k_diffusion" / "__init__.py").write_text("")
    (package / "k_diffusion" / "sampling.py").write_text(FAKE_COMFY_SAMPLING)
    (package / "model_sampling.py").write_text(FAKE_COMFY_MODEL_SAMPLING)
    script = EXAMPLES.parent / "scripts" / "comfyui_parity.py"
    result = subprocess.run(
        [sys.executable, str(script), "--comfyui", str(tmp_path), "--steps", "6", "--samples", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| er_sde") or line.startswith("| gradient")
    ]
    assert len(rows) == 6, result.stdout
    velocity_rows = [row for row in rows if row.startswith("| gradient_estimation |")]
    assert len(velocity_rows) == 2 and all(float(row.split("|")[4]) < 1e-7 for row in velocity_rows), rows
    paper_rows = [row for row in rows if "paper" in row]
    assert all(float(row.split("|")[4]) > 1e-4 for row in paper_rows), rows

"""On-shell latent interpolation (Chen et al., arXiv 2305.19947, §3) and its example."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusers_geo import interpolate_latents, norm_preserving_lerp, shell_radius, slerp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _pair(shape=(4, 16, 16), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def _angle(u, v):
    cos = float(u.flatten() @ v.flatten() / (u.norm() * v.norm()))
    return math.acos(max(-1.0, min(1.0, cos)))


def test_gaussian_latents_lie_on_the_shell():
    a, b = _pair((4, 32, 32))
    d = a.numel()
    assert shell_radius(d) == shell_radius((4, 32, 32)) == math.sqrt(d)
    assert shell_radius(d, sigma=80.0) == 80 * math.sqrt(d)
    for z in (a, b):
        assert abs(float(z.norm()) / shell_radius(d) - 1) < 0.03  # relative spread ~ 1 / sqrt(2d)
    # the straight mix sinks inside: |(a + b) / 2| ~ sqrt(1/2) of the radius
    assert abs(float(torch.lerp(a, b, 0.5).norm()) / shell_radius(d) - math.sqrt(0.5)) < 0.03


def test_slerp_endpoints_norms_and_constant_angular_speed():
    a, b = _pair()
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    b_on_shell = b * (a.norm() / b.norm())  # equal norms: the great circle keeps the norm exactly
    theta = _angle(a, b)
    for t in (0.1, 0.25, 0.5, 0.9):
        z = slerp(a, b_on_shell, t)
        assert float(z.norm()) == pytest.approx(float(a.norm()), rel=1e-12)
        assert _angle(a, z) == pytest.approx(t * theta, rel=1e-9)
        assert _angle(z, b_on_shell) == pytest.approx((1 - t) * theta, rel=1e-9)
    # in the plane of a and b: z = c1 a + c2 b
    z = slerp(a, b, 0.3)
    basis = torch.stack([a.flatten(), b.flatten()], 1)
    coef = torch.linalg.lstsq(basis, z.flatten()[:, None]).solution
    torch.testing.assert_close(basis @ coef, z.flatten()[:, None])
    # dtype kept, nearly parallel inputs fall back to lerp
    a32, b32 = _pair(dtype=torch.float32)
    assert slerp(a32, b32, 0.5).dtype == torch.float32
    torch.testing.assert_close(slerp(a, a * 1.0000001, 0.5), torch.lerp(a, a * 1.0000001, 0.5))


def test_norm_preserving_lerp():
    a, b = _pair()
    assert torch.equal(norm_preserving_lerp(a, b, 0.0), a) and torch.equal(norm_preserving_lerp(a, b, 1.0), b)
    for t in (0.2, 0.5, 0.7):
        z = norm_preserving_lerp(a, b, t)
        assert float(z.norm()) == pytest.approx((1 - t) * float(a.norm()) + t * float(b.norm()), rel=1e-12)
        assert _angle(z, torch.lerp(a, b, t)) < 1e-6  # same direction as the straight mix
        radius = shell_radius(a.shape)
        assert float(norm_preserving_lerp(a, b, t, radius=radius).norm()) == pytest.approx(radius, rel=1e-12)


def test_interpolate_latents_stacks_frames():
    a, b = _pair((4, 8, 8))
    for method in ("slerp", "norm-lerp", "lerp"):
        frames = interpolate_latents(a, b, 5, method=method)
        assert frames.shape == (5, 4, 8, 8)
        assert torch.equal(frames[0], a) and torch.allclose(frames[-1], b)
    slerp_norms = interpolate_latents(a, b, 5).flatten(1).norm(dim=1) / shell_radius(a.shape)
    lerp_norms = interpolate_latents(a, b, 5, method="lerp").flatten(1).norm(dim=1) / shell_radius(a.shape)
    assert float(slerp_norms.min()) > 0.9 and float(lerp_norms[2]) < 0.8  # only lerp leaves the shell


def test_bad_input():
    a, b = _pair((4, 8, 8))
    with pytest.raises(ValueError, match="different shapes"):
        slerp(a, b[:, :4], 0.5)
    with pytest.raises(ValueError, match="different shapes"):
        interpolate_latents(a[None], b, 3)
    with pytest.raises(ValueError, match="different shapes"):
        interpolate_latents(a, b[:2], 3, method="lerp")
    with pytest.raises(ValueError, match="different shapes"):
        norm_preserving_lerp(a, b.flatten(), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        slerp(a, b, 1.5)
    with pytest.raises(ValueError, match="opposite"):
        slerp(a, -a, 0.5)
    with pytest.raises(ValueError, match="non-zero"):
        slerp(a, torch.zeros_like(a), 0.5)
    with pytest.raises(ValueError, match="method"):
        interpolate_latents(a, b, 3, method="cubic")
    with pytest.raises(ValueError, match="num"):
        interpolate_latents(a, b, 1)
    with pytest.raises(TypeError):
        slerp(a.numpy(), b, 0.5)


def test_interpolate_seeds_example(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("interpolate_seeds", EXAMPLES / "interpolate_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--steps", "3", "--frames", "4", "--out", str(tmp_path / "strip.png")])
    image = Image.open(out)
    assert image.size == (4 * 64, 2 * 64)  # 4 frames x (slerp, lerp) rows of 8-pixel images upscaled 8x
    printed = capsys.readouterr().out
    assert "slerp" in printed and "lerp" in printed

"""Equivariance oracles of spec diffusability §8."""

import pytest
import torch
import torch.nn.functional as F

from latentbench.metrics.equivariance import affine_equivariance, equivariance_errors, rescale, rotate
from latentbench.metrics.normalization import channel_stats


def _images(n: int = 12, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 16)


def test_average_pool_encoder_is_exactly_equivariant():
    out = affine_equivariance(_avg_pool, _images(), rotations=(1, 2, 3), scales=(0.5,), batch_size=5)
    assert out["rotate_eq"] == pytest.approx(0.0, abs=1e-20)
    assert out["scale_eq"] == pytest.approx(0.0, abs=1e-20)
    for errs in out["per_transform"].values():
        assert errs["cosine"] == pytest.approx(1.0, abs=1e-12)


def test_input_independent_latents_give_error_two():
    gen = torch.Generator().manual_seed(1)

    def noise_encoder(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], 4, x.shape[-2] // 8, x.shape[-1] // 8, generator=gen, dtype=torch.float64)

    out = affine_equivariance(noise_encoder, _images(40, 128), rotations=(1, 2, 3), scales=(), batch_size=16)
    assert out["rotate_eq"] == pytest.approx(-2.0, abs=0.05)
    assert "scale_eq" not in out


def test_position_dependent_encoder_is_not_rotation_equivariant():
    bias = torch.linspace(0, 3, 16, dtype=torch.float64)[None, None, :, None].expand(1, 3, 16, 16)

    def biased(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4) + bias

    out = affine_equivariance(biased, _images(8), rotations=(1, 2), scales=())
    assert out["rotate_eq"] < -0.1
    assert out["per_transform"]["rotate_2"]["relative"] > 0


def test_given_stats_equal_own_stats_path():
    images = _images(10, 64, 2)

    def encoder(x):
        return F.avg_pool2d(x, 8) ** 2 + torch.roll(F.avg_pool2d(x, 8), 1, dims=-1)

    transforms = {"rotate_1": lambda x: rotate(x, 1), "scale_0.5": lambda x: rescale(x, 0.5)}
    own = equivariance_errors(encoder, images, transforms, batch_size=3)
    given = equivariance_errors(encoder, images, transforms, stats=channel_stats(encoder(images)), batch_size=4)
    for name in transforms:
        for key in ("mse", "relative", "cosine"):
            assert given[name][key] == pytest.approx(own[name][key], rel=1e-10)
    assert own["rotate_1"]["mse"] > 0


def test_inconsistent_scale_factor_raises():
    def ceil_pool(x):
        return F.avg_pool2d(x, 16, ceil_mode=True)

    with pytest.raises(ValueError, match="scale_0.625"):
        affine_equivariance(ceil_pool, _images(2), rotations=(), scales=(0.625,))
    with pytest.raises(ValueError, match="images"):
        affine_equivariance(_avg_pool, torch.zeros(3, 64, 64))

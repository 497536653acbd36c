"""PSNR and SSIM against the oracles of spec ifid-seesaw 4.4 and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from latentbench.metrics.reconstruction import IFID_PSNR_OFFSET_DB, PSNR_CAP_DB, psnr, ssim

torch.set_num_threads(1)


def random_pair(n: int, c: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An image batch in [0, 1] and a noisy, in-range reconstruction of it."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return x, y


def skimage_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    """Per-image skimage SSIM with the arguments of DESIGN.md's public API."""
    return np.array(
        [
            structural_similarity(
                a.numpy(),
                b.numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=data_range,
                channel_axis=0,
            )
            for a, b in zip(x, y)
        ]
    )


# ---- PSNR -----------------------------------------------------------------------------


def test_psnr_one_grey_level_oracle() -> None:
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full((2, 3, 8, 8), 1 / 255)
    np.testing.assert_allclose(psnr(x, y).numpy(), 48.1308036, atol=1e-6)
    np.testing.assert_allclose(
        psnr(x, y, protocol="ifid-reference-code").numpy(), 48.1308036 + 6.0206, atol=1e-4
    )
    assert IFID_PSNR_OFFSET_DB == pytest.approx(6.0206, abs=1e-4)


def test_psnr_matches_per_image_definition() -> None:
    x, y = random_pair(4, 3, 16, 16)
    mse = ((255 * (x - y)) ** 2).flatten(1).mean(1)
    expected = 20 * torch.log10(255 / mse.sqrt())
    torch.testing.assert_close(psnr(x, y), expected, rtol=1e-12, atol=0)
    # the quirk protocol is exactly the standard value + 20 log10 2 for in-range images
    torch.testing.assert_close(
        psnr(x, y, protocol="ifid-reference-code"),
        expected + IFID_PSNR_OFFSET_DB,
        rtol=1e-12,
        atol=0,
    )


def test_psnr_clamps_reconstruction_in_standard_mode_only() -> None:
    x = torch.full((1, 3, 4, 4), 0.5)
    y = x.clone()
    y[..., 0, 0] = 1.5  # decoder overshoot, clamped to 1.0 in standard mode
    clamped = y.clamp(0, 1)
    assert psnr(x, y).item() == pytest.approx(psnr(x, clamped).item(), rel=1e-14)
    assert (
        psnr(x, y, protocol="ifid-reference-code").item()
        < psnr(x, clamped, protocol="ifid-reference-code").item()
    )


def test_psnr_identical_images_capped() -> None:
    x, _ = random_pair(3, 3, 8, 8)
    out = psnr(x, x.clone())
    assert out.dtype == torch.float64 and out.shape == (3,)
    assert torch.all(out == PSNR_CAP_DB)


def test_psnr_batch_independence_and_symmetry() -> None:
    x, y = random_pair(5, 3, 12, 12)
    full = psnr(x, y)
    torch.testing.assert_close(
        torch.cat([psnr(x[i : i + 1], y[i : i + 1]) for i in range(5)]), full
    )
    torch.testing.assert_close(psnr(y, x), full)


# ---- SSIM -----------------------------------------------------------------------------


def test_ssim_identity_is_one() -> None:
    x, _ = random_pair(2, 3, 20, 24)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-14)


def test_ssim_constant_images_oracle() -> None:
    # (2ab + C1) / (a^2 + b^2 + C1) with a=100, b=110, L=255, for any window
    x = torch.full((1, 3, 16, 16), 100 / 255, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), 110 / 255, dtype=torch.float64)
    assert ssim(x, y).item() == pytest.approx(0.9954764440915066, abs=1e-12)
    # float32 inputs: 100/255 and 110/255 are rounded to float32 before the float64 math
    assert ssim(x.float(), y.float()).item() == pytest.approx(0.9954764440915066, abs=1e-8)


def test_ssim_sinusoid_reference() -> None:
    col = torch.arange(64, dtype=torch.float64).view(1, 1, 64)
    row = torch.arange(64, dtype=torch.float64).view(1, 64, 1)
    k = torch.arange(3, dtype=torch.float64).view(3, 1, 1)
    x255 = 128 + 60 * torch.sin(col / 7 + k) * torch.cos(row / 9)  # spec 4.4, 0..255 scale
    y255 = 0.9 * x255 + 10
    value = ssim((x255 / 255)[None], (y255 / 255)[None]).item()
    assert value == pytest.approx(0.9962278660, abs=1e-10)


@pytest.mark.parametrize("shape", [(3, 11, 11), (3, 32, 32), (1, 17, 40), (4, 45, 23)])
def test_ssim_equals_skimage(shape: tuple[int, int, int]) -> None:
    x, y = random_pair(3, *shape, seed=sum(shape))
    np.testing.assert_allclose(ssim(x, y).numpy(), skimage_ssim(x, y), rtol=0, atol=1e-8)


def test_ssim_float32_input_equals_skimage() -> None:
    x, y = random_pair(2, 3, 32, 32, seed=5)
    x32, y32 = x.float(), y.float()
    np.testing.assert_allclose(
        ssim(x32, y32).numpy(), skimage_ssim(x32.double(), y32.double()), rtol=0, atol=1e-8
    )


def test_ssim_ifid_quirk_protocol() -> None:
    x, y = random_pair(2, 3, 24, 24, seed=7)
    expected = skimage_ssim((x + 1) * 127.5, (y + 1) * 127.5, data_range=255)
    quirk = ssim(x, y, protocol="ifid-reference-code").numpy()
    np.testing.assert_allclose(quirk, expected, rtol=0, atol=1e-8)
    assert np.all(quirk > ssim(x, y).numpy())  # biased upwards (spec 4.2)


def test_ssim_symmetry_channel_order_and_batch_independence() -> None:
    x, y = random_pair(4, 3, 20, 20, seed=3)
    full = ssim(x, y)
    torch.testing.assert_close(ssim(y, x), full, rtol=0, atol=1e-14)
    perm = [2, 0, 1]
    torch.testing.assert_close(ssim(x[:, perm], y[:, perm]), full, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        torch.cat([ssim(x[i : i + 1], y[i : i + 1]) for i in range(4)]), full
    )
    assert torch.all(full < 1) and torch.all(full > 0)


def test_ssim_decreases_with_noise() -> None:
    x, _ = random_pair(1, 3, 32, 32, seed=11)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    values = [ssim(x, (x + s * noise).clamp(0, 1)).item() for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]


def test_bad_input_raises() -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="y"):
        psnr(x, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match="x"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))
    with pytest.raises(ValueError, match="protocol"):
        psnr(x, x, protocol="paper")
    with pytest.raises(ValueError, match="y"):
        ssim(x, torch.full_like(x, math.nan))
    with pytest.raises(ValueError, match="x"):
        psnr((x * 255).to(torch.uint8), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, y = random_pair(2, 3, 32, 32)
    torch.testing.assert_close(ssim(x.cuda(), y.cuda()).cpu(), ssim(x, y), rtol=0, atol=1e-12)
    torch.testing.assert_close(psnr(x.cuda(), y.cuda()).cpu(), psnr(x, y), rtol=1e-12, atol=0)

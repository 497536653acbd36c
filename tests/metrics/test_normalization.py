"""Per-channel standardisation (spec diffusability §1.5)."""

import pytest
import torch

from latentbench.metrics.normalization import ChannelStats, channel_stats, standardize


def _latents(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.5, 2.0, 10.0])[None, :, None, None]
    shift = torch.tensor([-1.0, 3.0, 0.0])[None, :, None, None]
    return torch.randn(37, 3, 5, 4, generator=gen) * scale + shift


def test_matches_torch_unbiased_mean_std():
    z = _latents()
    mean, std = channel_stats(z)
    flat = z.double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(mean, flat.mean(dim=1), rtol=0, atol=1e-12)
    torch.testing.assert_close(std, flat.std(dim=1, unbiased=True), rtol=1e-12, atol=0)


def test_streaming_does_not_depend_on_batching():
    z = _latents(1)
    whole = channel_stats(z)
    uneven = channel_stats([z[:1], z[1:20], z[20:]])
    chunked = channel_stats(z, chunk=4)
    for m, s in (uneven, chunked):
        torch.testing.assert_close(m, whole[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(s, whole[1], rtol=1e-12, atol=0)
    acc = ChannelStats().update(z[:10]).update(z[10:])
    assert acc.count == 37 * 5 * 4


def test_standardize_gives_zero_mean_unit_std():
    z = _latents(2)
    out = standardize(z, *channel_stats(z))
    flat = out.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(flat.std(dim=1), torch.ones(3, dtype=torch.float64), rtol=1e-12, atol=0)


def test_dead_channel_becomes_zero_not_nan():
    z = _latents(3)
    z[:, 1] = 4.0
    out = standardize(z, *channel_stats(z))
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="latents"):
        channel_stats(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="mean/std"):
        standardize(_latents(), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="channels"):
        ChannelStats().update(torch.zeros(2, 3, 2, 2)).update(torch.zeros(2, 4, 2, 2))

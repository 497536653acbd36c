"""LPIPS-AlexNet v0.1 wrapper: the oracles of spec ifid-seesaw §4.4 on a random trunk.

The real trunk (torchvision ``alexnet-owt-7be5be79.pth``) cannot be downloaded here, so the
value fixture of §4.4 (two seeded 64x64 noise images) is not recorded yet; the loading path
is tested with a torchvision AlexNet state dict we write ourselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from latentbench.metrics.lpips import ALEXNET_FILE, LPIPSMetric
from latentbench.weights import WeightMissing

torch.set_num_threads(1)


def pair(n: int = 3, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    y = (x + 0.2 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def metric() -> LPIPSMetric:
    return LPIPSMetric(None, random_backbone=True)


@pytest.fixture()
def no_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any real Hugging Face / torch.hub cache so lookups only see tmp_path."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_identical_images_give_exactly_zero(metric: LPIPSMetric) -> None:
    x, _ = pair()
    d = metric(x, x.clone())
    assert d.shape == (3,) and d.dtype == torch.float32
    assert torch.equal(d, torch.zeros(3))


def test_symmetric_nonnegative_and_informative(metric: LPIPSMetric) -> None:
    x, y = pair(seed=1)
    d = metric(x, y)
    torch.testing.assert_close(d, metric(y, x), rtol=1e-6, atol=0)
    assert bool((d > 0).all())
    far = 1 - x  # a much larger change than the noise in y must score higher
    assert bool((metric(x, far) > d).all())


def test_released_linear_heads_are_loaded(metric: LPIPSMetric) -> None:
    """The v0.1 heads from the lpips wheel: trained non-negative, unlike a random 1x1 conv."""
    heads = [lin.model[-1].weight for lin in metric.model.lins]
    assert [h.shape[1] for h in heads] == [64, 192, 384, 256, 256]
    assert all(bool((h >= 0).all()) and float(h.max()) > 0 for h in heads)


def test_normalize_on_unit_range_equals_default_on_2x_minus_1(metric: LPIPSMetric) -> None:
    """Spec §4.4: lpips' normalize=True on [0, 1] == the default call on 2x - 1 inputs."""
    x, y = pair(seed=2)
    with torch.inference_mode():
        default = metric.model(2 * x - 1, 2 * y - 1).reshape(-1)
    torch.testing.assert_close(metric(x, y), default, rtol=0, atol=0)


def test_standard_protocol_clamps(metric: LPIPSMetric) -> None:
    x, y = pair(seed=3)
    overshoot = y + 0.3 * (y > 0.5).float()
    torch.testing.assert_close(metric(x, overshoot), metric(x, overshoot.clamp(0, 1)), rtol=0, atol=0)


def test_ifid_quirk_differs_from_standard() -> None:
    """Spec §4.2: [0, 1] images fed where [-1, 1] is expected (no conversion, no clamp)."""
    quirk = LPIPSMetric(None, protocol="ifid-reference-code", random_backbone=True)
    x, y = pair(seed=4)
    with torch.inference_mode():
        unconverted = quirk.model(x, y).reshape(-1)
    torch.testing.assert_close(quirk(x, y), unconverted, rtol=0, atol=0)
    standard = LPIPSMetric(None, random_backbone=True)
    assert float((quirk(x, y) - standard(x, y)).abs().min()) > 1e-4


def test_missing_trunk_weights_raise(tmp_path: Path, no_caches: None) -> None:
    with pytest.raises(WeightMissing) as info:
        LPIPSMetric(tmp_path)
    assert ALEXNET_FILE in str(info.value) and str(tmp_path) in str(info.value)
    assert str(info.value).startswith("not run: needs ")


def test_trunk_weights_are_loaded(tmp_path: Path, no_caches: None) -> None:
    """A torchvision AlexNet state dict in weights_dir ends up in lpips' trunk slices."""
    torch.manual_seed(7)
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), tmp_path / ALEXNET_FILE)
    metric = LPIPSMetric(tmp_path)
    loaded = {k.split(".", 1)[1]: v for k, v in metric.model.net.state_dict().items()}  # slice1.0.weight
    for index in (0, 3, 6, 8, 10):
        for param in ("weight", "bias"):
            assert torch.equal(loaded[f"{index}.{param}"], alexnet.features[index].state_dict()[param])
    x, y = pair(n=1, seed=5)
    assert float(metric(x, y)) > 0


def test_bad_arguments(metric: LPIPSMetric) -> None:
    x, y = pair(n=2)
    with pytest.raises(ValueError, match="protocol"):
        LPIPSMetric(None, protocol="paper", random_backbone=True)
    with pytest.raises(ValueError, match="y"):
        metric(x, y[:1])
    with pytest.raises(ValueError, match="x"):
        metric(x.to(torch.uint8), y)
    with pytest.raises(ValueError, match="x: expected NCHW images with 3 channels"):
        metric(x[:, :1], y[:, :1])

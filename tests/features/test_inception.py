"""Inception-v3 pool3 extractor (spec ifid-seesaw §1.3): shapes, invariances, input modes, weights.

All network tests run on seeded random weights of the real architecture (no weights can be
downloaded here); ``test_weight_file_is_loaded`` exercises the loading path with a file we
write ourselves. The fixture vector of spec §1.6 (pool3 of an all-0.5 image) needs the real
weights and is not recorded yet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentbench.features import available_feature_extractors, build_feature_extractor
from latentbench.features.inception import (
    _TRUNK,
    NAME,
    WEIGHTS_FILE,
    InceptionV3Features,
    build_inception_network,
)
from latentbench.weights import WeightMissing

torch.set_num_threads(1)

SEED = 3


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_features_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to ``tol`` relative to the feature scale (features are O(1) by construction)."""
    scale = float(b.abs().max())
    assert scale > 0.1, "features are degenerate: the test would pass trivially"
    torch.testing.assert_close(a, b, rtol=0, atol=tol * scale)


@pytest.fixture(scope="module")
def float_net() -> InceptionV3Features:
    return InceptionV3Features(random_init=True, seed=SEED)


@pytest.fixture(scope="module")
def uint8_net() -> InceptionV3Features:
    return InceptionV3Features(random_init=True, seed=SEED, input_mode="uint8")


@pytest.fixture()
def no_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any real Hugging Face / torch.hub cache so lookups only see tmp_path."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_registered_under_its_name() -> None:
    assert NAME == "inception-v3-compat" and NAME in available_feature_extractors()
    with pytest.raises(WeightMissing):  # the registry path reaches the real constructor
        build_feature_extractor(NAME, weights="/nonexistent/dir")


def test_trunk_follows_torch_fidelity_layer_order() -> None:
    """Our pool3 trunk is torch-fidelity's children in forward() order, minus the logits layer."""
    net = build_inception_network(random_init=True)
    assert tuple(name for name, _ in net.named_children()) == (*_TRUNK, "fc")


def test_output_shape_and_dtype(float_net: InceptionV3Features) -> None:
    feats = float_net(images(2, 64).double())  # any float dtype and size in, float32 [N, 2048] out
    assert feats.shape == (2, 2048) and float_net.dim == 2048 and feats.dtype == torch.float32
    assert bool(torch.isfinite(feats).all()) and bool((feats >= 0).all())  # ReLU then average pool
    assert float((feats[0] - feats[1]).abs().max()) > 1e-2  # different images, different features


def test_batch_size_independence(float_net: InceptionV3Features) -> None:
    x = images(4, 40, seed=1)
    assert_features_close(torch.cat([float_net(x[:1]), float_net(x[1:])]), float_net(x))


def test_channels_last_equals_contiguous(float_net: InceptionV3Features) -> None:
    contiguous = InceptionV3Features(random_init=True, seed=SEED, channels_last=False)
    x = images(2, 32, seed=2)
    assert_features_close(float_net(x), contiguous(x))


def test_uint8_mode_equals_torch_fidelity_forward(uint8_net: InceptionV3Features) -> None:
    x = images(2, 48, seed=4)
    upstream = build_inception_network(random_init=True, seed=SEED)  # torch-fidelity's own module
    q = torch.floor(x * 255 + 0.5).to(torch.uint8)
    (reference,) = upstream(q)
    assert_features_close(uint8_net(x), reference)


def test_input_modes_on_and_off_the_uint8_grid(float_net: InceptionV3Features, uint8_net: InceptionV3Features) -> None:
    """TF's (q - 128) / 128 of q = 255 x is exactly pytorch-fid's 2 y - 1 at y = 255 x / 256.

    At 299 px both resizes are the identity, so for x already on the 1/255 grid uint8 mode on
    x equals float mode on 255/256 x: the network inputs agree to ~1 ulp (measured: features
    bit-identical), and we allow the 1e-5 relative tolerance that also covers batching and
    memory layout. Off the grid, uint8 mode also quantises (errors up to 1/510 per pixel);
    global pooling averages that noise down, to ~3e-4 relative on these weights, so "differ"
    means more than 10x the agreement tolerance.
    Plain float vs uint8 mode on the same on-grid x differ by the normalisation alone: an
    input offset x/128 (at most 1/256 of the [-1, 1] range, a smooth shift rather than noise),
    so features move by O(1/256) relative (measured 3.7e-3); we bound it by 1e-2.
    """
    on_grid = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(5)) / 255
    pre_uint8 = uint8_net.preprocess(on_grid)
    torch.testing.assert_close(pre_uint8, float_net.preprocess(on_grid * 255 / 256), rtol=0, atol=1e-6)
    feats_uint8, feats_float = uint8_net(on_grid), float_net(on_grid)
    assert_features_close(feats_uint8, float_net(on_grid * 255 / 256))
    assert_features_close(feats_uint8, feats_float, tol=1e-2)
    off_grid = images(2, 299, seed=6)
    gap = (uint8_net(off_grid) - float_net(off_grid * 255 / 256)).abs().max()
    assert float(gap) > 1e-4 * float(feats_float.abs().max())


def linear_sample(signal: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """1-D linear interpolation of ``signal`` at positions s (clamped to the signal's support)."""
    s = s.clamp(0, len(signal) - 1)
    i0 = s.floor().long()
    i1 = (i0 + 1).clamp(max=len(signal) - 1)
    w = s - i0
    return (1 - w) * signal[i0] + w * signal[i1]


@pytest.mark.parametrize("width", [200, 400])  # up- and down-sampling to 299
def test_resize_conventions(width: int, float_net: InceptionV3Features, uint8_net: InceptionV3Features) -> None:
    """Rows of one random 1-D signal on the uint8 grid, width W -> 299 (spec §1.3 table).

    float mode, bilinear with half-pixel centres and no antialias (pytorch-fid): column u
    samples s = (u + 0.5) W / 299 - 0.5, value 2 v / 255 - 1. uint8 mode, TF1
    resize_bilinear without half-pixel centres: s = u W / 299, value (v - 128) / 128.
    Antialiasing would low-pass the 400 -> 299 case and fail the first assertion. Tolerance
    1e-4: the resizes compute positions in float32 (eps 1.5e-5 at s ~ 200) and the signal
    slope is up to 2 per pixel on the [-1, 1] scale.
    """
    signal = torch.randint(0, 256, (width,), generator=torch.Generator().manual_seed(width)).double()
    x = (signal.float() / 255).expand(1, 3, 8, width)
    u = torch.arange(299, dtype=torch.float64)
    expected_float = 2 * linear_sample(signal, (u + 0.5) * width / 299 - 0.5) / 255 - 1
    expected_tf1 = (linear_sample(signal, u * width / 299) - 128) / 128
    torch.testing.assert_close(
        float_net.preprocess(x)[0, :, 3].double(), expected_float.expand(3, 299), rtol=0, atol=1e-4
    )
    torch.testing.assert_close(
        uint8_net.preprocess(x)[0, :, 3].double(), expected_tf1.expand(3, 299), rtol=0, atol=1e-4
    )


def test_float_mode_does_not_clamp(float_net: InceptionV3Features, uint8_net: InceptionV3Features) -> None:
    """Spec §1.5 pitfall 3: the iFID code feeds unclamped decoder output; torch-fidelity clamps."""
    x = 1.4 * images(1, 299, seed=7) - 0.2  # overshoots both ends of [0, 1]
    torch.testing.assert_close(float_net.preprocess(x), 2 * x - 1, rtol=0, atol=0)
    assert not torch.equal(float_net.preprocess(x), float_net.preprocess(x.clamp(0, 1)))
    assert torch.equal(uint8_net.preprocess(x), uint8_net.preprocess(x.clamp(0, 1)))


def test_missing_weights_name_the_file(tmp_path: Path, no_caches: None) -> None:
    with pytest.raises(WeightMissing) as info:
        InceptionV3Features(weights=tmp_path)
    message = str(info.value)
    assert message.startswith("not run: needs ") and WEIGHTS_FILE in message and str(tmp_path) in message
    assert "torch-fidelity v0.2.0" in message
    with pytest.raises(WeightMissing, match="missing.pth"):
        InceptionV3Features(weights=tmp_path / "missing.pth")


def test_weight_file_is_loaded(tmp_path: Path, no_caches: None) -> None:
    """A state dict on disk is loaded strictly, by file path or from a weights directory."""
    reference = build_inception_network(random_init=True, seed=11)
    torch.save(reference.state_dict(), tmp_path / WEIGHTS_FILE)
    for weights in (tmp_path / WEIGHTS_FILE, tmp_path):
        loaded = build_inception_network(weights)
        for (key, a), b in zip(reference.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a, b), key
    truncated = {k: v for k, v in reference.state_dict().items() if not k.startswith("Mixed_7c")}
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(RuntimeError, match="Mixed_7c"):
        build_inception_network(tmp_path / "truncated.pth")


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
        torch.zeros(1, 1, 32, 32),
        torch.zeros(3, 32, 32),
        torch.full((1, 3, 32, 32), float("nan")),
    ],
)
def test_bad_images_raise(float_net: InceptionV3Features, bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="images"):
        float_net(bad)


def test_bad_input_mode() -> None:
    with pytest.raises(ValueError, match="input_mode"):
        InceptionV3Features(random_init=True, input_mode="png")


def test_is_logits_equal_torch_fidelity_logits_unbiased(uint8_net: InceptionV3Features) -> None:
    """IS reads torch-fidelity's "logits_unbiased" (pool3 @ fc.weight, no bias; ADM evaluator)."""
    x = images(2, 48, seed=6)
    upstream = build_inception_network(random_init=True, seed=SEED)
    upstream.features_list = ["2048", "logits_unbiased"]  # the feature names torch-fidelity's forward reads
    _, reference = upstream(torch.floor(x * 255 + 0.5).to(torch.uint8))
    feats, logits = uint8_net.features_and_logits(x)
    assert logits.shape == (2, uint8_net.num_classes) == (2, 1008)
    assert_features_close(feats, uint8_net(x))
    assert_features_close(logits, reference, tol=1e-4)

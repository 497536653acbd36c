"""LPIPS-VGG, the perceptual term of Eq. 12: equal to the ``lpips`` package's own LPIPS(net="vgg")
holding the same VGG16 weights (loaded through torchvision's VGG16, as the package does), with the
v0.1 heads of the wheel; differentiable; wrong files are named."""

from __future__ import annotations

import pytest
import torch
import torchvision

from latentbench.features.lpips_vgg import LpipsVgg
from latentbench.weights import WeightMissing
from latentbench.weights_fetch import load_manifest, locate

torch.set_num_threads(1)


def _random_vgg16_features(seed: int) -> dict[str, torch.Tensor]:
    """A random torchvision VGG16 ``features`` state dict under its file's key names."""
    torch.manual_seed(seed)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    return {f"features.{k}": v for k, v in features.state_dict().items()}


@pytest.fixture(scope="module")
def trunk_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(_random_vgg16_features(0), path)
    return path


def _reference(trunk_file, monkeypatch):
    """The package's model, its trunk from torchvision's VGG16 holding the file's weights."""
    import lpips
    import lpips.pretrained_networks as pn

    state = torch.load(trunk_file, weights_only=True)
    real_vgg16 = torchvision.models.vgg16

    def vgg16_with_file(*args, **kwargs):
        net = real_vgg16(weights=None)
        net.features.load_state_dict({k[len("features.") :]: v for k, v in state.items()})
        return net

    monkeypatch.setattr(pn.tv, "vgg16", vgg16_with_file)
    return lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=False, verbose=False).eval()


def test_equals_the_lpips_package_with_the_same_vgg_weights(trunk_file, monkeypatch):
    ours = LpipsVgg(trunk=trunk_file)
    reference = _reference(trunk_file, monkeypatch)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    with torch.no_grad():
        expected = reference(x * 2 - 1, y * 2 - 1).reshape(-1)
    torch.testing.assert_close(ours(x, y), expected)
    assert ours(x, y).shape == (3,) and bool((ours(x, y) > 0).all())
    torch.testing.assert_close(ours(x, x), torch.zeros(3))
    heads = torch.load(locate(load_manifest()["lpips-vgg-head"], None), map_location="cpu", weights_only=True)
    torch.testing.assert_close(ours.model.lin2.model[1].weight, heads["lin2.model.1.weight"])


def test_gradient_reaches_the_reconstruction_not_the_network(trunk_file):
    ours = LpipsVgg(trunk=trunk_file)
    x = torch.rand(2, 3, 32, 32)
    y = torch.rand(2, 3, 32, 32, requires_grad=True)
    ours(x, y).sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in ours.model.parameters())


def test_trunk_comes_from_the_weights_dir_and_wrong_files_are_named(tmp_path, monkeypatch, trunk_file):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightMissing, match="vgg16-397923af.pth.*download.pytorch.org/models/vgg16-397923af.pth"):
        LpipsVgg(weights_dir=tmp_path)
    (tmp_path / "vgg16-397923af.pth").write_bytes(trunk_file.read_bytes())
    a = LpipsVgg(weights_dir=tmp_path)
    b = LpipsVgg(trunk=trunk_file)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(a(x, y), b(x, y))
    alexnet = {f"features.{k}": v for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}
    torch.save(alexnet, tmp_path / "alex.pth")
    with pytest.raises(ValueError, match="alex.pth: not a torchvision VGG16"):
        LpipsVgg(trunk=tmp_path / "alex.pth")

"""Shared fixtures: a small synthetic set, a briefly trained dense demo net, a demo-cnn file."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def synthetic():
    from latentbench.data.synthetic import SyntheticSpec, generate

    return generate(SyntheticSpec(num_images=320, resolution=32, seed=3))


@pytest.fixture(scope="session")
def demo_weights(tmp_path_factory, synthetic):
    """(dense demo net file, demo-cnn file, training metrics): the DAG's stand-in nets, tiny."""
    from latentbench.data.synthetic import NUM_CLASSES
    from latentbench.drift.demo_dense import save_dense_demo_net, train_dense_demo_net
    from latentbench.features.demo_net import DemoNet, save_demo_net

    root = tmp_path_factory.mktemp("demo_weights")
    train = slice(0, 256)
    val = slice(256, None)
    net, metrics = train_dense_demo_net(
        synthetic["image"][train], synthetic["depth"][train], synthetic["seg"][train], NUM_CLASSES + 1,
        val=(synthetic["image"][val], synthetic["depth"][val], synthetic["seg"][val]), epochs=6, batch_size=16, log=lambda _: None,
    )
    save_dense_demo_net(net, root / "dense.pt")
    torch.manual_seed(0)
    cnn = DemoNet(NUM_CLASSES).eval()
    save_demo_net(cnn, root / "demo_cnn.pt")
    return root / "dense.pt", root / "demo_cnn.pt", metrics


@pytest.fixture(scope="session")
def demo_projectors(demo_weights):
    from latentbench.drift.projectors import resolve_projectors
    from latentbench.drift.projectors.demo import demo_projector_config

    dense, cnn, _ = demo_weights
    names, options = demo_projector_config(dense, cnn)
    built, not_run = resolve_projectors(["spatial", "identity", "clip", "dinov2"], names, options)
    assert not not_run
    return built


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if sigma == 0:
        return images.copy()
    return np.stack([cv2.GaussianBlur(img, (0, 0), sigma) for img in images])

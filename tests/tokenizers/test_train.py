"""Tokenizer training loop: determinism, bitwise resume, NaN handling, outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentbench.checkpoint import load_checkpoint
from latentbench.data.shards import ShardedSplit, write_split
from latentbench.data.synthetic import SyntheticSpec, generate
from latentbench.features.demo_net import DemoNet
from latentbench.tokenizers import load_tokenizer
from latentbench.tokenizers.train import BatchStream, train_tokenizer

ARCH = {
    "ch": 8,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [16],
    "z_channels": 2,
    "embed_dim": 2,
    "resolution": 32,
    "norm_groups": 4,
}  # fmt: skip  (latent 2x16x16)
QUIET = {"log": lambda s: None, "lr": 1e-3}
RUN2 = {"steps": 2, "batch_size": 8, "disc_start": 1, "checkpoint_every": 100}  # a two-step run
L1 = {"perceptual_weight": 0}  # no perceptual network: L1 reconstruction only (LPIPS-VGG: tests/tokenizers/test_foundation.py)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return generate(SyntheticSpec(48, 32, seed=0))["image"]


@pytest.fixture(scope="module")
def net() -> DemoNet:
    torch.manual_seed(0)
    return DemoNet(10, widths=(8, 8, 8)).eval().requires_grad_(False)


def _cfg(regularizer="baseline", variant=None, **extra):
    return {"family": "conv_kl", "arch": ARCH, "regularizer": regularizer, "variant": variant, **extra}


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


VIT_ARCH = {"preset": "demo", "patch_size": 2, "width": 16, "depth": 1, "z_channels": 2}  # latent 2x16x16


def _vit(regularizer="baseline", variant=None):
    return {"family": "trans_kl", "arch": VIT_ARCH, "regularizer": regularizer, "variant": variant}


RESUME_CASES = [
    _cfg(kl_weight=1e-3),
    _cfg("mcos+mdms", "demo-cnn"),
    _cfg("eq", "scale"),
    _cfg("lmr", "p0.1-0.15-0.15"),
    _cfg("mae", "r0.7"),
    _vit("mae", "r0.7"),  # MAETok-style token masking
    _vit("eq", "scale"),  # downscaled inputs and latents: resampled position embeddings
    _vit("lcr", "w0.02-th0.75"),
]


@pytest.mark.parametrize("cfg", RESUME_CASES, ids=lambda c: f"{c['family']}-{c['regularizer']}")
def test_resume_is_bitwise_identical(tmp_path, images, net, cfg):
    kw = dict(feature_net=net, steps=4, batch_size=8, disc_start=1, seed=3, checkpoint_every=2, **QUIET)
    full = train_tokenizer(cfg, images, tmp_path / "a.pt", tmp_path / "a.ckpt", **kw)
    assert full["completed"] and full["step"] == 4
    part = train_tokenizer(cfg, images, tmp_path / "b.pt", tmp_path / "b.ckpt", max_steps_this_run=2, **kw)
    assert not part["completed"] and part["step"] == 2 and not (tmp_path / "b.pt").exists()
    msgs = []
    rest = train_tokenizer(cfg, images, tmp_path / "b.pt", tmp_path / "b.ckpt", **{**kw, "log": msgs.append})
    assert rest["completed"] and rest["steps_this_run"] == 2
    assert any("resumed" in m and "step 2" in m for m in msgs)
    _assert_bitwise_equal(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))
    a, b = torch.load(tmp_path / "a.pt", weights_only=False), torch.load(tmp_path / "b.pt", weights_only=False)
    _assert_bitwise_equal(a["regularizer_state"], b["regularizer_state"])


def test_crash_in_callback_then_resume(tmp_path, images):
    kw = dict(steps=6, batch_size=8, disc_start=1, seed=1, checkpoint_every=2, **QUIET)
    cfg = _cfg("lcr", "w0.05-th0.90", **L1)
    train_tokenizer(cfg, images, tmp_path / "a.pt", None, **kw)

    def crash(step, logs):
        if step == 5:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(cfg, images, tmp_path / "b.pt", tmp_path / "b.ckpt", on_step=crash, **kw)
    assert load_checkpoint(tmp_path / "b.ckpt", restore_rng=False)["step"] == 4
    train_tokenizer(cfg, images, tmp_path / "b.pt", tmp_path / "b.ckpt", **kw)
    _assert_bitwise_equal(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))


def test_same_seed_same_weights_other_seed_differs(tmp_path, images):
    kw = dict(steps=3, batch_size=8, disc_start=1, checkpoint_every=100, **QUIET)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train_tokenizer(_cfg(**L1), images, tmp_path / f"{name}.pt", seed=seed, **kw)
    _assert_bitwise_equal(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))
    a, c = _weights(tmp_path / "a.pt"), _weights(tmp_path / "c.pt")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_nan_raises_naming_step_and_keeps_last_checkpoint(tmp_path, images):
    calls = []

    def perceptual(x, y):  # a perceptual network that breaks on the 5th step
        calls.append(1)
        d = (x - y).abs().mean(dim=(1, 2, 3))
        return d * float("nan") if len(calls) == 5 else d

    with pytest.raises(FloatingPointError, match="step 5"):
        train_tokenizer(_cfg(), images, tmp_path / "a.pt", tmp_path / "a.ckpt", steps=8, batch_size=8,
                        disc_start=6, checkpoint_every=3, perceptual=perceptual, **QUIET)  # fmt: skip
    state = load_checkpoint(tmp_path / "a.ckpt", restore_rng=False)
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["tokenizer"].values())
    assert not (tmp_path / "a.pt").exists()


def test_checkpoint_of_another_run_is_ignored(tmp_path, images, caplog):
    """A changed config must not continue the old run: the job starts over, as a fresh run."""
    kw = dict(steps=2, batch_size=8, disc_start=1, checkpoint_every=1, **QUIET)
    train_tokenizer(_cfg(**L1), images, tmp_path / "a.pt", tmp_path / "a.ckpt", max_steps_this_run=1, **kw)
    with caplog.at_level("WARNING"):
        train_tokenizer(_cfg(kl_weight=1e-3, **L1), images, tmp_path / "a.pt", tmp_path / "a.ckpt", **kw)
    assert "different run" in caplog.text
    train_tokenizer(_cfg(kl_weight=1e-3, **L1), images, tmp_path / "b.pt", None, **kw)
    a, b = torch.load(tmp_path / "a.pt", weights_only=False), torch.load(tmp_path / "b.pt", weights_only=False)
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key


def test_outputs_and_sharded_input(tmp_path, images):
    spec = SyntheticSpec(40, 32, seed=1)
    write_split(tmp_path / "train", 40, 15, lambda s, n: generate(spec, s, n))
    metrics = train_tokenizer(_cfg(**L1), str(tmp_path / "train"), tmp_path / "tok.pt", **RUN2, **QUIET)
    assert set(metrics["eval"]) >= {"mse", "psnr", "posterior_std", "latent_std", "latent_snr"}
    assert metrics["discriminator"] == {"n_layers": 2, "ndf": 16}  # demo-size PatchGAN below 128 px
    tok = load_tokenizer(tmp_path / "tok.pt")
    assert tok.latent_shape == (2, 16, 16)
    payload = torch.load(tmp_path / "tok.pt", weights_only=False)
    assert payload["config"]["arch"]["ch"] == 8 and payload["metrics"]["completed"]


def test_batch_stream_epochs_cover_each_image_once(tmp_path):
    spec = SyntheticSpec(40, 32, seed=2)
    write_split(tmp_path / "s", 40, 15, lambda s, n: generate(spec, s, n))
    split = ShardedSplit(tmp_path / "s")
    stream = BatchStream(split, batch_size=8, seed=0)
    assert stream.batches_per_epoch == 5
    all_images = split.load_all(("image",))["image"].reshape(40, -1)
    for epoch in range(2):
        seen = np.concatenate([stream.batch(epoch * 5 + b) for b in range(5)]).reshape(40, -1)
        idx = sorted(int(np.flatnonzero((all_images == row).all(1))[0]) for row in seen)
        assert idx == list(range(40))
    again = BatchStream(split, batch_size=8, seed=0)
    assert np.array_equal(again.batch(7), stream.batch(7))
    assert not np.array_equal(BatchStream(split, 8, seed=1).batch(0), stream.batch(0))


def test_bad_arguments(images):
    with pytest.raises(ValueError, match="steps"):
        train_tokenizer(_cfg(), images, "x.pt", **{**RUN2, "steps": 0}, **QUIET)
    with pytest.raises(ValueError, match="family"):
        train_tokenizer({"family": "other"}, images, "x.pt", **RUN2, **QUIET)
    with pytest.raises(ValueError, match="batch_size"):
        train_tokenizer(_cfg(), images[:4], "x.pt", **RUN2, **QUIET)
    with pytest.raises(ValueError, match="target_features"):
        train_tokenizer(_cfg("mcos", "demo-cnn"), images, "x.pt", **RUN2, **QUIET)
    with pytest.raises(ValueError, match="uint8"):
        train_tokenizer(_cfg(), images.astype(np.float32), "x.pt", **RUN2, **QUIET)

"""The latent cache: block-wise reads, per-row posterior samples, memory maps, encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentbench.io import save_npy, write_json
from latentbench.latents import LatentCache, encode_to_cache, row_seeds
from latentbench.metrics.ifid import sample_posterior
from latentbench.metrics.normalization import channel_stats
from latentbench.seeding import derive_seed


@pytest.fixture
def cache(tmp_path) -> LatentCache:
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(37, 2, 3, 3)).astype(np.float32)
    save_npy(tmp_path / "mean.npy", mean)
    save_npy(tmp_path / "std.npy", np.full_like(mean, 0.5))
    write_json(tmp_path / "stats.json", {"channel_mean": [0.0, 0.0], "channel_std": [1.0, 1.0]})
    return LatentCache(tmp_path)


def test_row_seeds_are_distinct_and_blockwise_identical():
    seeds = row_seeds(12345, 0, 1000)
    assert len(set(seeds.tolist())) == 1000
    assert np.array_equal(np.concatenate([row_seeds(12345, 0, 400), row_seeds(12345, 400, 1000)]), seeds)
    assert not np.array_equal(row_seeds(12346, 0, 10), seeds[:10])
    # splitmix64 reference value (Vigna's splitmix64.c with state 0: first output)
    assert int(row_seeds(0, 0, 1)[0]) == 0xE220A8397B1DCDAF


def test_posterior_sample_of_a_row_does_not_depend_on_the_block(cache):
    whole = cache.rows(0, len(cache), "sample", 7, "val")
    parts = torch.cat([b for _, b in cache.blocks("sample", 7, "val", rows=5)])
    assert torch.equal(whole, parts)
    assert torch.equal(cache.rows(11, 12, "sample", 7, "val"), whole[11:12])
    # row i is mean_i + std_i * N(0, I) from its own seed
    key = derive_seed(7, "posterior", "val")
    expect = sample_posterior(torch.from_numpy(np.array(cache.mean[3:4])), torch.full((1, 2, 3, 3), 0.5),
                              [int(row_seeds(key, 3, 4)[0])])
    assert torch.equal(whole[3:4], expect)
    assert not torch.equal(cache.rows(0, 5, "sample", 7, "train"), whole[:5])  # splits draw independently
    assert torch.equal(cache.rows(2, 6, "mean", 7, "val"), torch.from_numpy(np.array(cache.mean[2:6])))


def test_array_is_a_memory_map_of_the_same_latents(cache):
    with cache.array("mean", 0, "val") as arr:
        assert isinstance(arr, np.memmap)
    subset = np.array([1, 4, 5, 30])
    with cache.array("sample", 3, "val", rows=subset) as arr:
        assert isinstance(arr, np.memmap) and arr.shape == (4, 2, 3, 3)
        assert torch.equal(torch.from_numpy(np.array(arr)), cache.latents("sample", 3, "val")[subset])
    with cache.array("sample", 3, "val") as arr:
        assert torch.equal(torch.from_numpy(np.array(arr)), cache.latents("sample", 3, "val"))


def test_encode_to_cache_streams_and_matches_channel_stats(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(10, 3, 4, 4)

    def encode_moments(x):
        return x[:, :2] * 2 - 1, x[:, 2:3].expand(-1, 2, -1, -1) * 0.1 + 0.01

    batches = [images[i : i + 3] for i in range(0, 10, 3)]
    stats = encode_to_cache(encode_moments, batches, 10, (2, 4, 4), tmp_path)
    cache = LatentCache(tmp_path)
    mean, std = encode_moments(images)
    assert torch.allclose(cache.latents("mean", 0, "x"), mean)
    ref_mean, ref_std = channel_stats(mean)
    assert np.allclose(stats["channel_mean"], ref_mean.numpy()) and np.allclose(stats["channel_std"], ref_std.numpy())
    assert stats["mean_posterior_std"] == pytest.approx(float(std.double().mean()))
    with pytest.raises(ValueError, match="more than the 10 images"):  # InputError names the count
        encode_to_cache(encode_moments, [images, images[:1]], 10, (2, 4, 4), tmp_path / "bad")

"""checkpoint.EMA: parameters always averaged, float buffers only with ``buffers`` (Recipe.ema_buffers)."""

from __future__ import annotations

import torch

from latentbench.checkpoint import EMA
from latentbench.diffusion.recipes import RECIPES


def _net() -> torch.nn.Module:
    net = torch.nn.BatchNorm1d(2)  # weight/bias parameters; running stats float buffers; counter int
    return net


def test_buffers_follow_the_recipe_switch():
    for buffers, expect_mean in ((True, 0.5), (False, 1.0)):
        net = _net()
        ema = EMA(net, decay=0.5, buffers=buffers)
        with torch.no_grad():
            net.weight.fill_(3.0)  # initial 1.0 -> averaged to 2.0
            net.running_mean.fill_(1.0)  # initial 0.0
            net.num_batches_tracked.fill_(7)
        ema.update(net)
        assert torch.allclose(ema.shadow["weight"], torch.full((2,), 2.0))
        assert torch.allclose(ema.shadow["running_mean"], torch.full((2,), expect_mean))
        assert int(ema.shadow["num_batches_tracked"]) == 7


def test_ifid_recipe_averages_buffers_the_study_recipes_do_not():
    assert RECIPES["ifid_sit"].ema_buffers and not RECIPES["study_sit"].ema_buffers

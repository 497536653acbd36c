"""C1: l-DeTok ``detok_BB`` (spec zoo.md §2 C1, §3 row ``detok``; models.md §2.2 DE-TOK).

Written from Jiawei-Yang/DeTok @706f7ac ``models/detok.py`` (architecture, RoPE, posterior) and
``utils/train_utils.py`` / ``main_diffusion.py`` (the latent statistics). Both halves are ViT-B/16
(width 768, 12 blocks, 12 heads) with RMSNorm (eps 1e-6), SwiGLU MLPs of hidden
``int(2/3 * 4 * width)``, a learned absolute position embedding *and* a 2-D rotary embedding on
q and k in every block. The encoder's ``latent_head`` gives mean || logvar of 16 channels per
patch (256 tokens at 256 px); the decoder embeds 16-channel tokens, runs its blocks, maps each
token with a 1x1 conv to a 16x16x3 patch (channel order p1, p2, c) and ends in a 3x3 conv.

Images: the network works in [-1, 1] (DeTok's transforms normalise with mean = std = 0.5);
this adapter takes and returns [0, 1]. Upstream ``detokenize`` clamps its output to [0, 1]:
:meth:`DeTokTokenizer.decode` calls the decoder directly and does not clamp.

Latent normalisation (``native_normalize``): ``(z - mean_c) / std_c`` with the 16 per-channel
statistics DeTok's generator training collects over ImageNet (``stats.pkl``, key
``detok-BB-gamm3.0-m0.7``, entry ``"channel"``: mean and std of all 32 moment channels, of which
the first 16, the means', are used; ``scale_factor`` 1).

Parity (run once against the upstream module from the snapshot above, not vendored; narrow
random copy, 32 px, weights written in the released layout and loaded here): posterior mean
max |diff| 7e-9, std 0, decoded image 6e-8, native normalisation 6e-8 (``tokenize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentbench.tokenizers.base import WeightRef, check_images
from latentbench.tokenizers.kl_vae import LOGVAR_MAX, LOGVAR_MIN
from latentbench.tokenizers.pretrained.base import (
    PretrainedTokenizer,
    WeightsError,
    ZooRow,
    check_latent_shape,
    strict_load,
)
from latentbench.tokenizers.pretrained.checkpoints import (
    find_file,
    read_tensor_pickle,
)
from latentbench.weights_io import read_state

CHECKPOINT = "detok-BB-gamm3.0-m0.7-decoder_tuned.pth"
STATS_FILE = "l-DeTok-stats.pkl"  # the repo's ``stats.pkl`` under its manifest name
STATS_KEY = "detok-BB-gamm3.0-m0.7"  # DeTok README: --stats_key used with the decoder-tuned file

ROWS: tuple[ZooRow, ...] = (
    ZooRow(
        name="detok",
        arch="C1",
        latent_shape=(256, 16),
        encode="mean",
        aliases=("DE-TOK", "l-DeTok"),
        config={"img_size": 256, "patch_size": 16, "width": 768, "depth": 12, "heads": 12, "token_channels": 16},
        files=("detok-bb-decoder-tuned", "detok-stats"),
        norm=f"per-channel (z - mean_c) / std_c, stats.pkl[{STATS_KEY!r}]['channel'][:16]",
        params=171_712_628,
        unverified=(
            "stats.pkl layout read from DeTok's code (a pickle.dump of {key: {'single', 'channel'}} tensors), not from the file",
            "the .pth keeps the weights under 'model' (DeTok save_checkpoint); not opened here",
        ),
    ),
)


@dataclass(frozen=True)
class DeTokConfig:
    """Hyper-parameters of ``detok_BB`` (both halves share width/depth/heads)."""

    img_size: int = 256
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    token_channels: int = 16
    mlp_ratio: float = 4.0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.grid**2, self.token_channels)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dimension (torch ``nn.RMSNorm`` layout)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` with ``a || b = w12(x)`` (DeTok ``SwiGLUFFN``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def rope_table(head_dim: int, side: int, max_freq: float = 7.0, min_freq: float = 7e-4) -> torch.Tensor:
    """DeTok's 2-D rotary table ``(side*side, 2*head_dim)`` = cos || sin of per-element angles.

    ``head_dim // 4`` log-spaced frequencies from ``max_freq`` down to ``min_freq`` (cycles per
    unit), repeated twice; the first half of the head's channels turn with the row coordinate,
    the second half with the column coordinate; coordinates run over [0, 1] on each axis and
    tokens are row-major. (DeTok ``get_rope_tensor``.)
    """
    n = head_dim // 4
    freqs = max_freq * (max_freq / min_freq) ** torch.linspace(0, -1, n)
    freqs = torch.cat([freqs, freqs]) * (2 * math.pi)
    half = head_dim // 2
    coord = torch.linspace(0, 1, side)
    rows, cols = coord.repeat_interleave(side), coord.repeat(side)
    angle = torch.zeros(side * side, head_dim)
    angle[:, :half] = rows[:, None] * freqs
    angle[:, head_dim - half :] = cols[:, None] * freqs
    return torch.cat([angle.cos(), angle.sin()], dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``x * cos + rot(x) * sin`` with ``rot`` mapping each channel pair (a, b) to (-b, a).

    ``x``: (B, heads, N, head_dim); ``table``: (N, 2*head_dim) from :func:`rope_table`.
    """
    cos, sin = table.to(x.dtype).chunk(2, dim=-1)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-head self-attention, fused qkv with bias, RoPE on q and k."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"detok: width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # qkv channels are laid out (3, heads, head_dim), as einops "(qkv h d)"
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(apply_rope(q, rope), apply_rope(k, rope), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm block: RMSNorm -> RoPE attention -> residual, RMSNorm -> SwiGLU -> residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, int(2 / 3 * dim * mlp_ratio))  # DeTok's expression, evaluated left to right

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class _Trunk(nn.Module):
    """Learned positions, ``ln_pre``, the RoPE blocks, ``ln_post`` (shared by both halves)."""

    def __init__(self, cfg: DeTokConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.positional_embedding = nn.Parameter(cfg.width**-0.5 * torch.randn(1, cfg.grid**2, cfg.width))
        self.ln_pre = RMSNorm(cfg.width)
        self.transformer = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln_post = RMSNorm(cfg.width)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        # The rotary table is a pure function of the grid; DeTok keeps it as a non-persistent buffer.
        rope = rope_table(self.cfg.width // self.cfg.heads, self.cfg.grid).to(x.device)
        x = self.ln_pre(x + self.positional_embedding)
        for block in self.transformer:
            x = block(x, rope)
        return self.ln_post(x)


class _ToTokens(nn.Module):
    """(B, C, h, w) -> (B, h*w, C), row-major."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class Encoder(_Trunk):
    """Image in [-1, 1] -> (B, 256, 2*token_channels) moments (mean || logvar)."""

    def __init__(self, cfg: DeTokConfig) -> None:
        super().__init__(cfg)
        self.patch_embed = nn.Sequential(nn.Conv2d(3, cfg.width, cfg.patch_size, cfg.patch_size), _ToTokens())
        self.latent_head = nn.Linear(cfg.width, 2 * cfg.token_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent_head(self.run(self.patch_embed(x)))


class Decoder(_Trunk):
    """(B, 256, token_channels) tokens -> image in [-1, 1] (unclamped)."""

    def __init__(self, cfg: DeTokConfig) -> None:
        super().__init__(cfg)
        self.mask_token = nn.Parameter(cfg.width**-0.5 * torch.randn(1, 1, cfg.width))  # MAE training only
        self.decoder_embed = nn.Linear(cfg.token_channels, cfg.width)
        # index 1 as in DeTok's Sequential(Rearrange, Conv2d, Rearrange): the key is ffn.1.*
        self.ffn = nn.Sequential(nn.Identity(), nn.Conv2d(cfg.width, cfg.patch_size**2 * 3, 1))
        self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        h = self.run(self.decoder_embed(z))
        b, g, p = h.shape[0], cfg.grid, cfg.patch_size
        patches = self.ffn(h.transpose(1, 2).reshape(b, cfg.width, g, g))  # (B, p*p*3, g, g)
        # channel index = (p1 * p + p2) * 3 + c  (einops "(p1 p2 c)")
        img = patches.view(b, p, p, 3, g, g).permute(0, 3, 4, 1, 5, 2).reshape(b, 3, g * p, g * p)
        return self.conv_out(img)


class DeTok(nn.Module):
    """The ``detok_BB`` network: ``encoder`` and ``decoder`` (the checkpoint's top-level names)."""

    def __init__(self, cfg: DeTokConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.apply(_init_weights)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and logvar (clamped to [-30, 20]) of images in [-1, 1]."""
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def _init_weights(m: nn.Module) -> None:
    # DeTok._init_weights: truncated normal (std 0.02) for Linear/Conv weights, zero biases
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class DeTokTokenizer(PretrainedTokenizer):
    """Adapter: [0, 1] images <-> (B, 256, 16) DeTok tokens (Gaussian posterior)."""

    is_1d = True
    posterior = "gaussian"

    def __init__(self, row: ZooRow, net: DeTok, cfg: DeTokConfig) -> None:
        super().__init__()
        self.row = row
        self.net = net
        self.latent_shape = cfg.latent_shape
        self.native_norm = row.norm
        self.weights = (
            WeightRef("jjiaweiyang/l-DeTok", CHECKPOINT, "MIT"),
            WeightRef("jjiaweiyang/l-DeTok", "stats.pkl", "MIT"),
        )
        self.register_buffer("stat_mean", None, persistent=False)
        self.register_buffer("stat_std", None, persistent=False)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel latent statistics for :meth:`native_normalize` (``token_channels`` each)."""
        self.stat_mean = mean.detach().float().reshape(1, 1, -1)
        self.stat_std = std.detach().float().reshape(1, 1, -1)

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x)
        mean, logvar = self.net.moments(x * 2 - 1)
        return mean, torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decoder(z) * 0.5 + 0.5

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stat_mean is None:
            raise ValueError(f"{self.row.name}: native normalisation needs {STATS_FILE} (manifest entry detok-stats); built without weights")
        return self.stat_mean, self.stat_std

    def native_normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return (z - mean.to(z)) / std.to(z)

    def native_denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return z * std.to(z) + mean.to(z)


def read_stats(path: Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``channels`` per-channel means/stds of DeTok's ``stats.pkl`` (key :data:`STATS_KEY`)."""
    stats: Any = read_tensor_pickle(path)
    if not isinstance(stats, dict) or STATS_KEY not in stats:
        keys = list(stats)[:8] if isinstance(stats, dict) else type(stats).__name__
        raise WeightsError(f"{path}: expected the statistics under key {STATS_KEY!r}, found {keys}")
    try:
        mean, std = (torch.as_tensor(t).float().reshape(-1) for t in stats[STATS_KEY]["channel"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: {STATS_KEY!r} has no ('channel' -> (mean, std)) entry ({exc})") from None
    if mean.numel() != 2 * channels or std.numel() != 2 * channels:
        raise WeightsError(f"{path}: channel stats have {mean.numel()} entries, expected {2 * channels} (mean || logvar)")
    return mean[:channels], std[:channels]


def build(row: ZooRow, weights: Path | None) -> DeTokTokenizer:
    """DeTok adapter of ``row``: random init, or the released ``.pth`` (key ``model``) + ``stats.pkl``."""
    cfg = DeTokConfig(**row.config)
    if weights is None:
        tok = DeTokTokenizer(row, DeTok(cfg), cfg)
    else:
        ckpt = find_file(weights, (CHECKPOINT,), "DeTok checkpoint") if Path(weights).is_dir() else Path(weights)
        stats_path = find_file(ckpt, (STATS_FILE, "stats.pkl"), "DeTok latent statistics")
        with torch.device("meta"):
            net = DeTok(cfg)
        strict_load(net, read_state(ckpt, "model"), ckpt)
        tok = DeTokTokenizer(row, net, cfg)
        tok.set_stats(*read_stats(stats_path, cfg.token_channels))
    check_latent_shape(tok, cfg.latent_shape, weights)
    return tok.eval()

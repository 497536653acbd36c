"""The DiT backbone: SiT, iFID-SiT and LightningDiT as one configurable model.

One class, :class:`DiT`, reproduces every diffusion backbone of the three studies
(spec models.md §1.10). Its parts carry the names of the papers' parts:

- :class:`TimestepEmbedder`, :class:`LabelEmbedder` — the conditioning vector c (§1.2 items 3-5);
- :class:`PatchEmbed` (2-D latents) and :class:`TokenEmbed` (1-D tokens, §1.8);
- :class:`DiTBlock` — adaLN-Zero transformer block (§1.2 item 6), built from
  :class:`Attention` (optional QK-norm and RoPE) and :class:`Mlp` or :class:`SwiGLU`;
- :class:`RMSNorm` and :class:`RotaryEmbedding` — the LightningDiT additions (§1.4);
- :class:`FinalLayer` and the unpatchify step (§1.2 items 7-8).

Module and parameter names mirror the upstream code (willisma/SiT ``models.py``,
hustvl/LightningDiT ``models/lightningdit.py``, iFID ``ifid/sit/sit.py``), so an upstream state
dict maps onto ours key by key. The model works in the model's own time convention; the
convention and the training/sampling settings live on the recipe and the Transport.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

FFNKind = Literal["mlp", "swiglu"]
NormKind = Literal["layernorm", "rmsnorm"]
RopeKind = Literal["none", "2d", "1d"]
AttentionBackend = Literal["auto", "sdpa", "math"]

# "auto" attention runs the plain softmax path on CPU up to this many tokens: at 64 tokens the
# fused CPU kernel was measured slower than the matmul/softmax path (issue note; see the report).
AUTO_MATH_MAX_TOKENS = 64  # bench/bench_diffusion.py: plain kernel faster at 64 tokens, fused at 256 (inference)


# ---------------------------------------------------------------------------------------------
# Fixed position tables
# ---------------------------------------------------------------------------------------------


def _sincos_1d_half_split(dim: int, pos: Tensor) -> Tensor:
    """MAE 1-D table: ``concat(sin(pos*w_k), cos(pos*w_k))``, ``w_k = 10000^(-k/(dim/2))``.

    spec models.md §1.2 item 2 (MAE ``get_1d_sincos_pos_embed_from_grid``).
    """
    omega = torch.arange(dim // 2, dtype=torch.float64, device="cpu") / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = pos.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sin-cos position table ``[grid_h*grid_w, dim]``, tokens row-major.

    Token (row r, col c) gets ``concat(E(c), E(r))``: the first half encodes the **column**
    (MAE ``get_2d_sincos_pos_embed``: ``meshgrid(grid_w, grid_h)`` puts w first; spec §1.2 item 2).
    """
    if dim % 4 != 0:
        raise ValueError(f"hidden size must be divisible by 4 for the 2-D sincos table, got {dim}")
    rows = torch.arange(grid_h, device="cpu").repeat_interleave(grid_w)  # token n -> row n // grid_w
    cols = torch.arange(grid_w, device="cpu").repeat(grid_h)  # token n -> col n % grid_w
    return torch.cat([_sincos_1d_half_split(dim // 2, cols), _sincos_1d_half_split(dim // 2, rows)], 1)


def sincos_pos_embed_1d(dim: int, length: int) -> Tensor:
    """Interleaved 1-D table: ``pe[n, 2k] = sin(n d_k)``, ``pe[n, 2k+1] = cos(n d_k)``.

    ``d_k = exp(-2k ln(10000)/dim)`` (iFID ``positionalencoding1d``; spec §1.2 item 2, §1.8).
    """
    if dim % 2 != 0:
        raise ValueError(f"hidden size must be even for the 1-D sincos table, got {dim}")
    pos = torch.arange(length, dtype=torch.float64, device="cpu").reshape(-1, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, dtype=torch.float64, device="cpu")
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


# ---------------------------------------------------------------------------------------------
# Small building blocks
# ---------------------------------------------------------------------------------------------


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x (1 + scale) + shift`` broadcast over tokens (DiT; spec §1.2 item 6)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RMSNorm(nn.Module):
    """LLaMA RMSNorm ``x rsqrt(mean(x^2) + eps) w``, normalised in fp32 (LightningDiT ``rmsnorm.py``; §1.4)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        """Weight back to 1."""
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the last axis; the statistic is computed in float32, the result cast back."""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def _make_norm(kind: NormKind, dim: int) -> nn.Module:
    """Block norm: LayerNorm without affine (SiT, eps 1e-6) or RMSNorm (LightningDiT)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
    return RMSNorm(dim)


def _make_qk_norm(kind: NormKind, head_dim: int) -> nn.Module:
    """Per-head QK-norm: timm default LayerNorm(Dh) with affine (eps 1e-5), or RMSNorm(Dh) (§1.2, §1.4)."""
    if kind == "layernorm":
        return nn.LayerNorm(head_dim)
    return RMSNorm(head_dim)


def rotate_half(x: Tensor) -> Tensor:
    """Rotate adjacent pairs ``(a, b) -> (-b, a)`` along the last axis (EVA-02 ``rotate_half``; §1.4)."""
    pairs = x.unflatten(-1, (-1, 2))
    a, b = pairs.unbind(-1)
    return torch.stack((-b, a), dim=-1).flatten(-2)


def _rope_axis_angles(positions: Tensor, dim: int, theta: float = 10000.0) -> Tensor:
    """Angles ``pos * phi_j`` with ``phi_j = theta^(-2j/dim)``, each repeated twice interleaved.

    Returns ``[len(positions), dim]`` laid out ``(phi_0, phi_0, phi_1, phi_1, ...)``
    (EVA-02 ``VisionRotaryEmbeddingFast`` with ``freqs_for='lang'``; spec §1.4).
    """
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim)
    angles = positions.to(torch.float64).reshape(-1, 1) * freqs.reshape(1, -1)
    return angles.repeat_interleave(2, dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to q and k of every head (LightningDiT §1.4, 1-D §1.8).

    ``"2d"``: axial RoPE on a ``grid_h x grid_w`` token grid, tokens row-major; each head dim is
    split in half, the first half rotated by the **row** index, the second by the column index,
    each with ``Dh/4`` interleaved frequencies ``10000^(-2j/(Dh/2))``. ``"1d"`` (our assumption for
    LightningDiT on 1-D tokens, spec §1.8): one axis over the full head dim, ``10000^(-2j/Dh)``.
    ``rot(q) = q cos(theta) + rotate_half(q) sin(theta)``.
    """

    def __init__(self, head_dim: int, kind: Literal["2d", "1d"], grid: tuple[int, ...]) -> None:
        super().__init__()
        if kind == "2d" and (head_dim % 4 != 0 or len(grid) != 2):
            raise ValueError(f"2-D RoPE needs a (h, w) grid and a head dim divisible by 4, got {grid}, {head_dim}")
        if kind == "1d" and (head_dim % 2 != 0 or len(grid) != 1):
            raise ValueError(f"1-D RoPE needs a (length,) grid and an even head dim, got {grid}, {head_dim}")
        self.head_dim, self.kind, self.grid = head_dim, kind, tuple(grid)
        n = math.prod(self.grid)
        # Buffer names as upstream (feat_rope.freqs_cos / freqs_sin) so checkpoints load.
        self.register_buffer("freqs_cos", torch.empty(n, head_dim))
        self.register_buffer("freqs_sin", torch.empty(n, head_dim))
        if not self.freqs_cos.is_meta:
            self.reset_tables()

    def angles(self) -> Tensor:
        """Rotation angles ``[N, Dh]`` (float64, CPU) for the tokens in row-major order."""
        if self.kind == "2d":
            grid_h, grid_w = self.grid
            row = _rope_axis_angles(torch.arange(grid_h, device="cpu"), self.head_dim // 2)  # [gh, Dh/2]
            col = _rope_axis_angles(torch.arange(grid_w, device="cpu"), self.head_dim // 2)  # [gw, Dh/2]
            both = torch.cat(
                [row[:, None, :].expand(grid_h, grid_w, -1), col[None, :, :].expand(grid_h, grid_w, -1)], dim=-1
            )
            return both.reshape(grid_h * grid_w, self.head_dim)
        return _rope_axis_angles(torch.arange(self.grid[0], device="cpu"), self.head_dim)

    @torch.no_grad()
    def reset_tables(self) -> None:
        """(Re)compute the cos/sin tables, e.g. after ``to_empty``."""
        angles = self.angles()
        self.freqs_cos.copy_(angles.cos())
        self.freqs_sin.copy_(angles.sin())

    def forward(self, x: Tensor) -> Tensor:
        """Rotate ``x`` of shape ``[B, heads, N, Dh]``."""
        cos = self.freqs_cos.to(x.dtype)
        sin = self.freqs_sin.to(x.dtype)
        return x * cos + rotate_half(x) * sin


def attention_uses_math(q: Tensor) -> bool:
    """The ``"auto"`` rule: the plain kernel only for CPU inference on short sequences.

    Measured by bench/bench_diffusion.py on 2 CPU cores (heads 6, dim 64): in inference the plain
    kernel beats the fused one up to ``AUTO_MATH_MAX_TOKENS`` tokens, while for training
    (forward + backward) the fused kernel is as fast or faster at every length.
    """
    training = torch.is_grad_enabled() and q.requires_grad
    return q.device.type == "cpu" and not training and q.shape[-2] <= AUTO_MATH_MAX_TOKENS


def attention(q: Tensor, k: Tensor, v: Tensor, backend: AttentionBackend = "auto") -> Tensor:
    """``softmax(q k^T / sqrt(Dh)) v`` for ``[B, heads, N, Dh]`` inputs.

    ``"sdpa"``: ``F.scaled_dot_product_attention``; ``"math"``: explicit matmul + softmax (softmax
    in float32); ``"auto"``: :func:`attention_uses_math` decides per device, length and mode.
    Both give the same result up to float rounding.
    """
    if backend == "auto":
        backend = "math" if attention_uses_math(q) else "sdpa"
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if backend != "math":
        raise ValueError(f"attention_backend must be 'auto', 'sdpa' or 'math', got {backend!r}")
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return scores.float().softmax(dim=-1).to(v.dtype) @ v


class Attention(nn.Module):
    """timm-style multi-head self-attention with optional QK-norm and RoPE (spec §1.2 item 6, §1.4).

    ``qkv = Linear(D, 3D)`` split as ``(3, heads, Dh)`` (timm layout), QK-norm per head before
    RoPE, no dropout, ``proj = Linear(D, D)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qk_norm: bool = False,
        norm: NormKind = "layernorm",
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = _make_qk_norm(norm, self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = _make_qk_norm(norm, self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor, rope: RotaryEmbedding | None = None) -> Tensor:
        """Attend over the tokens of ``x [B, N, D]``."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)  # QK-norm before RoPE (LightningDiT Attention.forward)
        if rope is not None:
            q, k = rope(q), rope(k)
        out = attention(q, k, v, self.backend)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """timm ``Mlp``: ``Linear(D, 4D) -> GELU(tanh) -> Linear(4D, D)`` (spec §1.2 item 6)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Token-wise feed-forward."""
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SwiGLU FFN ``w3(SiLU(a) * b)``, ``(a, b) = chunk(w12(x))``, biases on (LightningDiT ``SwiGLUFFN``; §1.4)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Token-wise gated feed-forward."""
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


# ---------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of raw t in [0, 1] (not x1000), **cos first**, then an MLP (spec §1.2 item 3).

    ``f_k = exp(-ln(10000) k / 128)``, ``emb = concat(cos(t f), sin(t f))`` (256-d)
    ``-> Linear(256, D) -> SiLU -> Linear(D, D)`` (SiT ``TimestepEmbedder``).
    """

    def __init__(self, hidden: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def frequency_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
        """``[B] -> [B, dim]`` table ``concat(cos(t f_k), sin(t f_k))`` in float32."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        """Embed ``t [B]`` into ``[B, D]``."""
        emb = self.frequency_embedding(t, self.frequency_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class table with a null row for CFG; label dropout in training mode only (spec §1.2 item 4).

    ``Embedding(K + 1, D)``; index ``K`` is the null class. In training mode each label is
    replaced by ``K`` independently with probability ``dropout_prob`` (global torch RNG, as upstream).
    """

    def __init__(self, num_classes: int, hidden: int, dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        # The table is N(0, 0.02) (spec §1.2 item 9), set here rather than by nn.Embedding's own
        # reset; skipped on the meta device, where normal_ would import torch's compiler stack.
        table = torch.empty(num_classes + 1, hidden)
        if not table.is_meta:
            nn.init.normal_(table, std=0.02)
        self.embedding_table = nn.Embedding(num_classes + 1, hidden, _weight=table)

    def token_drop(self, labels: Tensor) -> Tensor:
        """Replace each label by the null class with probability ``dropout_prob``."""
        drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: Tensor) -> Tensor:
        """Embed ``labels [B]`` (int64 in ``[0, K]``)."""
        if self.training and self.dropout_prob > 0:
            labels = self.token_drop(labels)
        return self.embedding_table(labels)


class PatchEmbed(nn.Module):
    """timm ``PatchEmbed``: ``Conv2d(C, D, p, stride p)`` then row-major flatten (spec §1.2 item 1)."""

    def __init__(self, in_channels: int, hidden: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, (H/p)(W/p), D]``."""
        return self.proj(x).flatten(2).transpose(1, 2)


class TokenEmbed(nn.Module):
    """1-D token embedder ``Linear(C, D)`` per token (iFID ``vae_1d`` path; spec §1.8)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, T, C] -> [B, T, D]``."""
        return self.proj(x)


# ---------------------------------------------------------------------------------------------
# Transformer block and output head
# ---------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """adaLN-Zero block (DiT; spec §1.2 item 6, LightningDiT §1.4).

    ``SiLU -> Linear(D, 6D)`` on c, chunked ``shift_msa, scale_msa, gate_msa, shift_mlp,
    scale_mlp, gate_mlp``; ``x += gate_msa Attn(modulate(norm1 x))``, ``x += gate_mlp FFN(modulate(norm2 x))``.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        ffn: FFNKind = "mlp",
        norm: NormKind = "layernorm",
        qk_norm: bool = False,
        attention_backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = _make_norm(norm, hidden)
        self.attn = Attention(hidden, num_heads, qk_norm=qk_norm, norm=norm, backend=attention_backend)
        self.norm2 = _make_norm(norm, hidden)
        mlp_hidden = int(hidden * mlp_ratio)
        if ffn == "swiglu":
            # h = int(2/3 * 4D), not rounded to a multiple of 8 (LightningDiT block; spec §1.4).
            self.mlp: nn.Module = SwiGLU(hidden, int(2 / 3 * mlp_hidden))
        else:
            self.mlp = Mlp(hidden, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden, bias=True))

    def forward(self, x: Tensor, c: Tensor, rope: RotaryEmbedding | None = None) -> Tensor:
        """Update tokens ``x [B, N, D]`` under conditioning ``c [B, D]``."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """Norm -> modulate (``shift, scale`` from ``SiLU -> Linear(D, 2D)``) -> ``Linear(D, p^2 C_out)`` (§1.2 item 7)."""

    def __init__(self, hidden: int, patch_size: int, out_channels: int, norm: NormKind = "layernorm") -> None:
        super().__init__()
        self.norm_final = _make_norm(norm, hidden)
        self.linear = nn.Linear(hidden, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """``[B, N, D] -> [B, N, p^2 C_out]``."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ---------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiTConfig:
    """Every architecture flag of the DiT family (spec models.md §1.10).

    ``latent_shape`` is ``(C, H, W)`` for 2-D latents or ``(T, C)`` for 1-D tokens (§1.8).
    """

    latent_shape: tuple[int, ...]
    patch_size: int
    hidden: int
    depth: int
    heads: int
    num_classes: int = 1000
    mlp_ratio: float = 4.0
    ffn: FFNKind = "mlp"
    norm: NormKind = "layernorm"
    rope: RopeKind = "none"
    qk_norm: bool = False
    latent_bn: bool = False
    bn_momentum: float = 0.1
    learn_sigma: bool = False
    class_dropout_prob: float = 0.1
    attention_backend: AttentionBackend = "auto"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.latent_shape)
        object.__setattr__(self, "latent_shape", shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"latent_shape must be (C, H, W) or (T, C) with positive sizes, got {self.latent_shape}")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if len(shape) == 2 and self.patch_size != 1:
            raise ValueError(f"patch_size must be 1 for 1-D token latents (spec §1.8), got {self.patch_size}")
        if len(shape) == 3 and (shape[1] % self.patch_size or shape[2] % self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} does not divide the latent grid {shape[1:]}")
        if self.hidden < 1 or self.depth < 1 or self.heads < 1 or self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} must be a positive multiple of heads {self.heads}; depth >= 1")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {self.ffn!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.rope not in ("none", "2d", "1d"):
            raise ValueError(f"rope must be 'none', '2d' or '1d', got {self.rope!r}")
        if self.rope == "2d" and len(shape) != 3:
            raise ValueError("rope '2d' needs a 2-D latent_shape (C, H, W); use '1d' for token latents")
        if self.rope == "1d" and len(shape) != 2:
            raise ValueError("rope '1d' needs a 1-D latent_shape (T, C); use '2d' for grid latents")
        if self.attention_backend not in ("auto", "sdpa", "math"):
            raise ValueError(f"attention_backend must be 'auto', 'sdpa' or 'math', got {self.attention_backend!r}")
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(f"class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")

    @property
    def is_1d(self) -> bool:
        """True for ``(T, C)`` token latents."""
        return len(self.latent_shape) == 2

    @property
    def in_channels(self) -> int:
        """Latent channels C."""
        return self.latent_shape[-1] if self.is_1d else self.latent_shape[0]

    @property
    def grid(self) -> tuple[int, ...]:
        """Token grid: ``(H/p, W/p)`` for 2-D latents, ``(T,)`` for 1-D tokens."""
        if self.is_1d:
            return (self.latent_shape[0],)
        return (self.latent_shape[1] // self.patch_size, self.latent_shape[2] // self.patch_size)

    @property
    def num_tokens(self) -> int:
        """Sequence length N."""
        return math.prod(self.grid)


class LatentBatchNorm(nn.Module):
    """Non-affine BatchNorm over channel dim 1, synchronised across DDP ranks (iFID's SyncBN).

    Train mode normalises with the statistics of the *global* batch (every rank's micro-batch,
    all-reduced as float64 sums when a process group is running: what ``nn.SyncBatchNorm``
    does on GPUs, here on any backend, gloo included) and updates the running stats with the
    unbiased variance and ``momentum``; eval mode uses the running stats. Same buffers and
    numbers as ``nn.BatchNorm{1d,2d}(C, eps, momentum, affine=False)`` on one process.
    It normalises the clean data latent, which needs no gradient through the statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_parameters(self) -> None:
        """Running statistics back to (0, 1), as ``nn.BatchNorm`` does."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            dims = [0, *range(2, x.ndim)]
            with torch.no_grad():
                moments = torch.stack([
                    x.double().sum(dims), x.double().square().sum(dims),
                    torch.full((x.shape[1],), x.numel() / x.shape[1], dtype=torch.float64, device=x.device),
                ])
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(moments)
                total, total_sq, n = moments
                mean = total / n
                var = (total_sq / n - mean.square()).clamp_min(0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_((var * n / (n - 1).clamp_min(1)).to(self.running_var.dtype), self.momentum)
                self.num_batches_tracked += 1
            mean, var = mean.to(x.dtype), var.to(x.dtype)
        return (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)


class DiT(nn.Module):
    """Configurable DiT: SiT (official / iFID) and LightningDiT (spec models.md §1.2-1.4, §1.8, §1.10).

    ``model(x, t, y) -> velocity`` with ``x`` the normalised (noisy) latent ``[B, *latent_shape]``,
    ``t [B]`` float in the model's own time convention (held by the recipe/Transport, not here),
    ``y [B]`` int64 labels with ``num_classes`` the null class. The output has the shape of ``x``.

    With ``latent_bn`` (iFID ``bn_online``) the model owns a non-affine BatchNorm over channels;
    :meth:`normalize` maps a raw clean latent into the space ``forward`` works in (batch stats
    in train mode, running stats in eval mode) and :meth:`denormalize` maps samples back. Without
    it both are the identity.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.in_channels = config.in_channels
        self.out_channels = config.in_channels * (2 if config.learn_sigma else 1)
        self.patch_size = config.patch_size
        self.grad_checkpointing = False
        d = config.hidden

        if config.is_1d:
            self.x_embedder: nn.Module = TokenEmbed(config.in_channels, d)
        else:
            self.x_embedder = PatchEmbed(config.in_channels, d, config.patch_size)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(config.num_classes, d, config.class_dropout_prob)
        # Fixed table kept as a frozen Parameter, as upstream (state-dict key "pos_embed").
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, d), requires_grad=False)
        self.feat_rope = (
            RotaryEmbedding(d // config.heads, config.rope, config.grid) if config.rope != "none" else None
        )
        self.blocks = nn.ModuleList(
            DiTBlock(
                d,
                config.heads,
                mlp_ratio=config.mlp_ratio,
                ffn=config.ffn,
                norm=config.norm,
                qk_norm=config.qk_norm,
                attention_backend=config.attention_backend,
            )
            for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(d, config.patch_size, self.out_channels, norm=config.norm)
        if config.latent_bn:
            # iFID ifid/sit/sit.py: non-affine BN "to avoid affine hacking diffusion loss", eps 1e-4.
            self.bn: LatentBatchNorm | None = LatentBatchNorm(config.in_channels, eps=1e-4, momentum=config.bn_momentum)
        else:
            self.bn = None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Upstream ``initialize_weights`` (spec §1.2 item 9): the model outputs exactly 0 at init.

        Also fills the fixed position and RoPE tables. Skipped on the meta device (no values to
        set; meta ``normal_`` imports torch's compiler stack, seconds); after
        ``to_empty(device=...)`` call this method.
        """
        if self.pos_embed.is_meta:
            return

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        for module in self.modules():  # norm weights to 1, BN running stats to (0, 1)
            if isinstance(module, (nn.LayerNorm, RMSNorm, LatentBatchNorm)):
                module.reset_parameters()
        if self.config.is_1d:
            table = sincos_pos_embed_1d(self.config.hidden, self.config.num_tokens)
        else:
            table = sincos_pos_embed_2d(self.config.hidden, *self.config.grid)
        self.pos_embed.data.copy_(table.float().unsqueeze(0))
        if self.feat_rope is not None:
            self.feat_rope.reset_tables()
        # PatchEmbed conv initialised like a Linear on its (D, C p p) view; 1-D Linear likewise.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # -- latent normaliser (iFID bn_online) ---------------------------------------------------

    def normalize(self, z: Tensor) -> Tensor:
        """Raw clean latent -> model space with the in-model BN (identity when ``latent_bn`` is off).

        Train mode: current-batch statistics, running stats updated; eval mode: running stats
        (iFID ``SiT.forward``). 1-D tokens ``[B, T, C]`` are normalised over C (transposed BN1d).
        """
        if self.bn is None:
            return z
        if self.config.is_1d:
            return self.bn(z.transpose(1, 2)).transpose(1, 2)
        return self.bn(z)

    def denormalize(self, u: Tensor) -> Tensor:
        """Model space -> raw latent: ``z = u sqrt(running_var) + running_mean`` (identity without BN).

        As the iFID code (``running_var.rsqrt()`` without the BN eps; spec ifid-seesaw §2.2).
        """
        if self.bn is None:
            return u
        shape = (1, 1, -1) if self.config.is_1d else (1, -1, 1, 1)
        std = self.bn.running_var.sqrt().reshape(shape).to(u.dtype)
        mean = self.bn.running_mean.reshape(shape).to(u.dtype)
        return u * std + mean

    # -- forward ------------------------------------------------------------------------------

    def unpatchify(self, x: Tensor) -> Tensor:
        """``[B, N, p^2 C] -> [B, C, H, W]`` via ``nhwpqc -> nchpwq`` (spec §1.2 item 8)."""
        p, c = self.patch_size, self.out_channels
        h, w = self.config.grid
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def _check_inputs(self, x: Tensor, t: Tensor, y: Tensor) -> None:
        """One clear ValueError per malformed argument."""
        if tuple(x.shape[1:]) != self.config.latent_shape:
            raise ValueError(f"x must have shape [B, {self.config.latent_shape}], got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape [{x.shape[0]}], got {tuple(t.shape)}")
        if y.shape != (x.shape[0],) or y.dtype != torch.int64:
            raise ValueError(f"y must be int64 of shape [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")

    def embed(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Input tokens ``h [B, N, D]`` (patch embedding + position table) and conditioning ``c [B, D]``."""
        self._check_inputs(x, t, y)
        h = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t) + self.y_embedder(y)
        return h, c

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Predict the velocity (in the model's time convention) for noisy latent ``x`` at time ``t``."""
        return self.forward_tokens(*self.embed(x, t, y))

    def forward_tokens(self, h: Tensor, c: Tensor, block_residuals: Sequence[Tensor | None] = ()) -> Tensor:
        """Blocks and output head on embedded tokens (:meth:`embed`).

        ``block_residuals[i]`` (``[B, N, D]`` or None), when given, is added to the output of
        block ``i`` (the ControlNet hook, :mod:`latentbench.diffusion.controlnet`); the default
        adds nothing, so ``forward`` is unchanged.
        """
        if len(block_residuals) > len(self.blocks):
            raise ValueError(f"block_residuals has {len(block_residuals)} entries for {len(self.blocks)} blocks")
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and self.training:
                h = checkpoint(block, h, c, self.feat_rope, use_reentrant=False)
            else:
                h = block(h, c, self.feat_rope)
            if i < len(block_residuals) and block_residuals[i] is not None:
                h = h + block_residuals[i]
        out = self.final_layer(h, c)
        if not self.config.is_1d:
            out = self.unpatchify(out)
        if self.config.learn_sigma:
            # Official SiT learns a variance half that never gets gradient; keep the first C channels.
            out = out[:, : self.in_channels] if not self.config.is_1d else out[..., : self.in_channels]
        return out

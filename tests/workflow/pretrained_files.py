"""Released-format weight files of narrow pretrained tokenizers, for the tiny DAG study.

Two entries of the ``pretrained`` family go through the whole DAG in CI: an LDM state dict of a
narrow K3-style model with REPA-E latent statistics beside it (``invae``'s format, ``latent_norm:
native``) and a diffusers model directory of a narrow K1-style model (``eq-vae``'s format). The
weights are random; what the test checks is that released files load strictly and flow through
every rule like a trained tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentbench.tokenizers import build_tokenizer

# A K3-layout LDM model at demo width: f4 at 32 px -> 4x8x8 latents, like the demo tokenizers.
LDM_ARCH = {"ch": 16, "ch_mult": [1, 2, 2], "embed_dim": 4, "z_channels": 4, "num_res_blocks": 1,
            "norm_groups": 4, "attn_resolutions": [8], "resolution": 32}  # fmt: skip
DIFFUSERS_ARCH = {"block_out_channels": [16, 32, 32], "down_block_types": ["DownEncoderBlock2D"] * 3,
                  "up_block_types": ["UpDecoderBlock2D"] * 3, "layers_per_block": 1, "norm_num_groups": 8,
                  "resolution": 32}  # fmt: skip


def write_pretrained_fixture(directory: Path) -> dict[str, dict]:
    """Write both released-format files into ``directory``; return their tokenizer config entries."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    ldm = build_tokenizer({"family": "pretrained", "name": "IN-VAE", "weights": None, "arch": LDM_ARCH})
    ldm_file = directory / "invae-narrow.pt"
    torch.save({k: v.clone() for k, v in ldm.vae.state_dict().items()}, ldm_file)  # REPA-E: a plain state dict
    stats = {"latents_bias": torch.randn(1, 4, 1, 1) * 0.1, "latents_scale": 1.0 + torch.rand(1, 4, 1, 1)}
    torch.save(stats, directory / "invae-narrow-latents-stats.pt")
    dif = build_tokenizer({"family": "pretrained", "name": "eq-vae", "weights": None, "arch": DIFFUSERS_ARCH})
    dif_dir = directory / "eq-vae-narrow"
    dif.vae.save_pretrained(dif_dir)
    return {
        "p-invae": {"family": "pretrained", "name": "IN-VAE", "weights": str(ldm_file), "arch": LDM_ARCH,
                    "latent_norm": "native", "study_family": "conv-demo"},
        "p-eqvae": {"family": "pretrained", "name": "eq-vae", "weights": str(dif_dir), "arch": DIFFUSERS_ARCH,
                    "study_family": "pretrained-demo"},
    }  # fmt: skip

"""Pretrained zoo (K1/K3 rows): encode throughput and the loader's memory on a VA-VAE-sized file.

1. Encode throughput at 256 px, batch 8, randomly initialised SD-VAE (``sdvae``) and VA-VAE
   (``vavae_f16d32``): images/s of ``encode_moments`` on CPU (fp32), or with ``--gpu`` on CUDA
   under bf16 autocast.
2. Loader memory: a synthetic file in the layout of hustvl's 2.15 GB VA-VAE Lightning checkpoint
   (``state_dict`` holding the full-size autoencoder + ``loss.*`` + ``foundation_model.*`` +
   ``linear_proj.*``; the extra parts scaled by ``--extra-gb``) is loaded by
   ``build_pretrained("vavae_f16d32", file)`` in a fresh process; the peak-RSS increase over the
   process's RSS before the build is reported as a ratio to the autoencoder's size. The loader
   builds the module on the meta device and assigns the memory-mapped file tensors, so the ratio
   should stay well under 1 (no second copy of the AE, the dropped parts never read); a forward
   pass then touches the weights (ratio about 1). For comparison the upstream way (random-init
   model, whole file unpickled into memory, weights copied in) is measured on the same file.

Usage: uv run python bench/bench_zoo.py [--threads 2] [--repeats 1] [--extra-gb 0.6] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def throughput(name: str, device: str, batch: int, repeats: int, bf16: bool) -> float:
    """Images/s of ``encode_moments`` for a random-init zoo row."""
    from latentbench.tokenizers.pretrained import build_pretrained

    tok = build_pretrained(name).to(device)
    x = torch.rand(batch, 3, 256, 256, device=device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        tok.encode_moments(x[:1] if device == "cpu" else x)  # warm-up
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            tok.encode_moments(x)
        if device != "cpu":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def write_hustvl_like(path: Path, extra_gb: float) -> int:
    """A VA-VAE Lightning-checkpoint look-alike; returns the autoencoder's size in bytes."""
    from latentbench.tokenizers.kl_vae import ARCH_PRESETS, AutoencoderKL

    torch.manual_seed(0)
    ae = AutoencoderKL(ARCH_PRESETS["f16d32"]).state_dict()
    ae_bytes = sum(t.numel() * t.element_size() for t in ae.values())
    n_extra = int(extra_gb * 2**30 / 4)
    # foundation model (DINOv2-L ~ 1.2 GB fp32 in the real file) and LPIPS + discriminator
    foundation = {f"foundation_model.model.blocks.{i}.mlp.fc1.weight": torch.randn(n_extra // 24) for i in range(24)}
    loss = {"loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4), "loss.perceptual_loss.net.w": torch.randn(2_000_000)}
    state = {**ae, **foundation, **loss, "linear_proj.weight": torch.randn(1024, 32, 1, 1)}
    torch.save({"state_dict": state, "epoch": 0, "optimizer_states": []}, path)
    return ae_bytes


_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from latentbench.tokenizers.pretrained import build_pretrained

def status(key):  # kB fields of /proc/self/status, in bytes
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM): fork/exec inherit the parent's
before = status("VmRSS")
if sys.argv[2] == "naive":  # the upstream loaders: random-init model, whole file in memory, copy
    tok = build_pretrained("vavae_f16d32")
    sd = torch.load(sys.argv[1], map_location="cpu", weights_only=False)["state_dict"]
    tok.vae.load_state_dict({k: v for k, v in sd.items() if not k.startswith(("loss.", "foundation_model.", "linear_proj."))})
else:
    tok = build_pretrained("vavae_f16d32", sys.argv[1])
after_build = status("VmHWM")
with torch.inference_mode():
    tok.decode(tok.encode_moments(torch.rand(1, 3, 64, 64))[0])
after_forward = status("VmHWM")
print(json.dumps({"before": before, "after_build": after_build, "after_forward": after_forward}))
"""


def loader_memory(extra_gb: float) -> dict:
    """Peak-RSS increases of building from a synthetic hustvl-style file (fresh process)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vavae-imagenet256-f16d32-dinov2.pt"
        ae_bytes = write_hustvl_like(path, extra_gb)
        torch.save({"mean": torch.zeros(1, 32, 1, 1), "std": torch.ones(1, 32, 1, 1)}, Path(tmp) / "latents_stats.pt")
        file_bytes = path.stat().st_size
        result = {"file_gb": file_bytes / 2**30, "ae_gb": ae_bytes / 2**30}
        for mode in ("ours", "naive"):
            start = time.perf_counter()
            cmd = [sys.executable, "-c", _CHILD, str(path), mode]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            result[mode] = {"wall_s": time.perf_counter() - start,
                            "build_ratio": (r["after_build"] - r["before"]) / ae_bytes,
                            "forward_ratio": (r["after_forward"] - r["before"]) / ae_bytes}  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--extra-gb", type=float, default=0.6, help="size of the synthetic loss + foundation-model part")
    ap.add_argument("--gpu", action="store_true", help="throughput on CUDA under bf16 autocast")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if args.gpu else "cpu"
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device")
    for name in ("sdvae", "vavae_f16d32"):
        ips = throughput(name, device, args.batch, args.repeats if not args.gpu else max(args.repeats, 20), args.gpu)
        print(f"encode {name:13s} 256px batch {args.batch} on {device}{' bf16' if args.gpu else f' fp32 {args.threads} threads'}: {ips:8.2f} images/s")
    if not args.skip_memory:
        m = loader_memory(args.extra_gb)
        print(f"loader: synthetic hustvl-layout file {m['file_gb']:.2f} GB (AE {m['ae_gb']:.3f} GB); peak-RSS increase / AE size")
        for mode, what in (("ours", "build_pretrained (meta + mmap + assign)"), ("naive", "random init + torch.load + copy")):
            r = m[mode]
            print(f"  {what:40s}: after build {r['build_ratio']:.3f}, after one encode+decode {r['forward_ratio']:.3f} ({r['wall_s']:.1f} s)")


if __name__ == "__main__":
    main()

"""A made-up study results directory for report tests and bench/bench_report.py.

:func:`make_study` writes what the report reads for any config (the tiny test config, or
configs/scale-test.yaml: 86 tokenizers, 4 backbones, 11 guidance scales): metrics.csv with every
metric of metric_info (values drawn so that some proxies track gFID and some do not), the
``correlate`` job's outputs (by calling it), the demo net's summary, per-tokenizer latent.json and
trajectory.json, interpolation strips and sample grids as small PNGs, and optionally the Seesaw
drift columns and the ControlNet jobs' files of one tokenizer.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from latentbench.analysis.metric_info import METRICS
from latentbench.analysis.seesaw import DRIFT_MEASURES
from latentbench.config import (
    check_config,
    load_config,
    study_family,
    tokenizer_backbones,
)
from latentbench.io import write_json
from latentbench.stages.report import correlate_study

ROOT = Path(__file__).resolve().parents[2]
SCALE_TEST = ROOT / "configs" / "scale-test.yaml"


def _png(rng: np.random.Generator, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def small_config(n_tok: int = 5, backbones: int = 1, scales: tuple[float, ...] = (1.0, 1.5), n_boot: int = 50) -> dict:
    """A validated config of ``n_tok`` conv tokenizers (one family), ``backbones`` demo backbones."""
    regs = ["baseline", "mcos+mdms", "eq", "lcr", "mae", "repa"]
    variants = {"mcos+mdms": "demo-cnn", "repa": "demo-cnn", "eq": "scale", "lcr": "w0.02-th0.75", "mae": "r0.3"}
    return check_config({
        "study": "synthetic", "seed": 0,
        "data": {"kind": "synthetic", "resolution": 32, "train": 100, "val": 50, "shard_size": 50},
        "feature_net": {"name": "demo-cnn", "epochs": 1},
        "tokenizers": {f"tok{i}": {"family": "conv_kl", "regularizer": regs[i % len(regs)],
                                   **({"variant": variants[regs[i % len(regs)]]} if regs[i % len(regs)] in variants else {})}
                       for i in range(n_tok)},
        "backbones": {f"sit-{i}": {"size": "demo", "recipe": "study_sit", "patch_size": 1} for i in range(backbones)},
        "sampling": {"num_samples": 60, "steps": 5, "method": "euler", "cfg_scales": list(scales), "batch_size": 60},
        "analysis": {"n_boot": n_boot},
    })


def scale_config(n_boot: int = 1000) -> dict:
    """configs/scale-test.yaml (86 tokenizers x 4 backbones x 11 scales), validated."""
    config = load_config(SCALE_TEST)
    config["analysis"]["n_boot"] = n_boot
    return config


def make_study(root: Path, config: dict, drift: bool = False, images: bool = True, seed: int = 0) -> Path:
    """Write a study's results under ``root/<study>`` and return that directory."""
    rng = np.random.default_rng(seed)
    results = Path(root) / config["study"]
    tokenizers = list(config["tokenizers"])
    quality = rng.normal(size=len(tokenizers))  # the latent's hidden goodness: lower gFID
    per_tok = {}
    for i, tok in enumerate(tokenizers):
        q = quality[i]
        values = {}
        for m, meta in METRICS.items():
            if m in ("gfid", "is", "straightness", "efficiency", "diffusion_loss"):
                continue
            signal = rng.uniform(0.0, 1.0) if m != "lpips" else 0.5
            noise = rng.normal()
            base = signal * q + (1 - signal) * noise
            values[m] = float((base if meta.higher_is_better else -base) + 5.0)
        if drift:
            # distances and probe errors fall with quality, similarities rise
            similar = {"drift_identity", "drift_face_at_r", "drift_clip", "drift_dinov2"}
            values.update({c: float(0.5 + (0.02 if c in similar else -0.02) * q + 0.01 * rng.normal())
                           for c in DRIFT_MEASURES})
        per_tok[tok] = values
    rows = []
    for i, (tok, spec) in enumerate(config["tokenizers"].items()):
        for bb in tokenizer_backbones(spec, config["backbones"]):
            for w in config["sampling"]["cfg_scales"]:
                gfid = float(np.exp(1.5 - 0.4 * quality[i] - 0.3 * (w - 1.0) + (w - 1.8) ** 2 * 0.2 + 0.1 * rng.normal()))
                rows.append({"tokenizer": tok, "label": tok, "family": study_family(spec),
                             "regularizer": spec.get("regularizer", "baseline"), "variant": spec.get("variant", "-"),
                             "kl_weight": spec.get("kl_weight"), "backbone": bb,
                             "recipe": config["backbones"][bb]["recipe"], "cfg_scale": float(w), "gfid": gfid,
                             "num_samples": config["sampling"]["num_samples"], "is": 10.0 / gfid, "is_std": 0.1,
                             "diffusion_loss": 0.5 - 0.05 * quality[i] + 0.01 * rng.normal(),
                             "straightness": 0.9 + 0.02 * quality[i], "efficiency": 0.8 + 0.02 * quality[i],
                             "feature_net": "demo-cnn", "latent_shape": "4x8x8", "posterior_std": 0.5,
                             **per_tok[tok]})
    frame = pd.DataFrame(rows)
    results.mkdir(parents=True, exist_ok=True)
    frame.to_csv(results / "metrics.csv", index=False)
    settings = {"seed": config["seed"], "analysis": config["analysis"], "backbones": config["backbones"]}
    correlate_study(str(results / "metrics.csv"), settings, str(results / "correlations.csv"), str(results / "analysis"))
    write_json(results / "features" / "demo-cnn.json", {"val_accuracy": 0.9, "feature_dim": 128})
    steps = np.linspace(0, 1, 9)
    for i, tok in enumerate(tokenizers):
        tdir = results / "metrics" / tok
        write_json(tdir / "latent.json", {"viv_curve": {"t": steps.tolist(), "viv": (1 - steps).tolist()}})
        if images:
            (tdir / "interpolation.png").write_bytes(_png(rng, 128, 64))
        for bb in tokenizer_backbones(config["tokenizers"][tok], config["backbones"]):
            write_json(tdir / bb / "trajectory.json", {"length_ratio": (1 + 0.1 * rng.normal(size=8)).tolist()})
            if images:
                for w in config["sampling"]["cfg_scales"]:
                    path = results / "samples" / tok / bb / f"cfg{w:g}" / "shard-000.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(_png(rng, 64, 32))
    if drift:
        # the controlnet_evaluate jobs' files: one per (backbone, condition), with a Fig. 4 grid
        hyper = [{"hyperparameter": "base_batch_size", "paper": "4", "ours": 8},
                 {"hyperparameter": "optimizer", "paper": "AdamW", "ours": "AdamW"}]
        cn_dir = results / "metrics" / tokenizers[0] / next(iter(config["backbones"]))
        cn_dir.mkdir(parents=True, exist_ok=True)
        for cond, fid, l1 in (("canny", 12.5, 0.081), ("depth", 14.0, 0.052)):
            write_json(cn_dir / f"controlnet_{cond}.json",
                       {"cond_encoder": "conv", "fid": fid, "l1": l1, "hyperparameters": hyper})
            write_json(cn_dir / f"controlnet_{cond}_curves.json", {"hyperparameters": hyper})
            (cn_dir / f"controlnet_{cond}.png").write_bytes(_png(rng, 96, 32))
    return results

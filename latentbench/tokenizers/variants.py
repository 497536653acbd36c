"""Regulariser names and Table 1 variant grammar of the diffusability study (spec §11.2), torch-free.

``parse_variant`` is the one check of a tokenizer entry's ``regularizer``/``variant`` pair: the
config validator (:func:`latentbench.config.check_config`) calls it at parse time, before any
job, and :func:`latentbench.tokenizers.regularizers.build_regularizer` reads the parameters it
returns. ``DEFAULT_OPTIONS`` are the regularisers' optional hyper-parameters (``reg_options``).
"""

from __future__ import annotations

import re
from typing import Any

from latentbench.features.foundation import DEMO_NET, FOUNDATION_SPECS

REGULARIZERS = ("baseline", "mcos", "mdms", "mcos+mdms", "repa", "eq", "lcr", "lmr", "mae")
VF_CLUSTERS = {"mcos": (1.0, 0.0), "mdms": (0.0, 1.0), "mcos+mdms": (1.0, 1.0)}  # (w_cos, w_dm), §11.2
# Foundation encoders of Table 1 (iREPA ids, spec §11.3; built by latentbench.features.foundation_net)
# plus the demo's stand-in. features.foundation is torch-free too.
FOUNDATION_ENCODERS = (*FOUNDATION_SPECS, DEMO_NET)
EQ_TRANSFORMS = ("scale", "flip")
LMR_RATIOS = (0.0, 0.25, 0.5, 0.75)  # SSVAE mask_ratios

# Optional regulariser hyper-parameters (cfg["reg_options"]) and their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "vf_weight": 0.1,  # VF/REPA adaptive-weight scale (f16d32_vfdinov2.yaml vf_weight)
    "cos_margin": 0.5,  # m1
    "distmat_margin": 0.25,  # m2
    "repa_hidden": 2048,  # REPA projector width (REPA's default)
    "eq_p_latent": 0.5,  # EQ-VAE p_prior
    "eq_p_image_scale": 0.25,  # EQ-VAE p_prior_s
    "lcr_window": 2,  # SSVAE window_size [2,2] (spatial part)
    "mae_r_min": 0.0,  # unknown in the paper; spec default 0
    "mae_scale": 0.25,  # MAETok truncated-normal scale
}

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"


def parse_variant(regularizer: str, variant: str | None) -> dict[str, Any]:
    """Validate ``regularizer`` and its Table 1 ``variant`` string; return the parsed parameters."""
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; known: {', '.join(REGULARIZERS)}")
    v = None if variant in (None, "", "-") else str(variant)
    if regularizer == "baseline":
        if v is not None:
            raise ValueError(f"unknown variant {variant!r} for regularizer 'baseline' (use '-')")
        return {}
    if v is None:
        raise ValueError(f"regularizer {regularizer!r} needs a variant")
    if regularizer in VF_CLUSTERS or regularizer == "repa":
        if v not in FOUNDATION_ENCODERS:
            raise ValueError(
                f"unknown variant {v!r} for {regularizer!r}; known encoders: {', '.join(FOUNDATION_ENCODERS)}"
            )
        return {"encoder": v}
    if regularizer == "eq":
        if v not in EQ_TRANSFORMS:
            raise ValueError(f"unknown variant {v!r} for 'eq'; known: {', '.join(EQ_TRANSFORMS)}")
        return {"transform": v}
    if regularizer == "lcr":
        m = re.fullmatch(rf"w{_NUM}-th{_NUM}", v)
        if not m or not 0 < float(m[2]) <= 1 or not float(m[1]) > 0:
            raise ValueError(f"unknown variant {v!r} for 'lcr'; expected 'w<weight>-th<threshold in (0,1]>'")
        return {"weight": float(m[1]), "threshold": float(m[2])}
    if regularizer == "lmr":
        m = re.fullmatch(rf"p{_NUM}-{_NUM}-{_NUM}", v)
        probs = [float(g) for g in m.groups()] if m else []
        if not m or sum(probs) > 1 + 1e-9:
            raise ValueError(f"unknown variant {v!r} for 'lmr'; expected 'p<a>-<b>-<c>' with a+b+c <= 1")
        return {"probs": (1.0 - sum(probs), *probs)}  # P(0), P(.25), P(.5), P(.75)
    m = re.fullmatch(rf"r{_NUM}", v)  # mae
    if not m or not 0 < float(m[1]) < 1:
        raise ValueError(f"unknown variant {v!r} for 'mae'; expected 'r<ratio in (0,1)>'")
    return {"r_max": float(m[1])}

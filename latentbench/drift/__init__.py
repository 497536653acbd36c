"""Condition drift of the Tilted Seesaw study (spec metrics-ifid-seesaw §7-8, seesaw-notes).

- ``latentbench.drift.projectors``: the condition projectors (Canny, MiDaS DPT-Hybrid depth,
  UniFormer-S segmentation, InsightFace / dlib faces, CLIP, DINOv2, and the demo's stand-ins)
  behind one registry;
- ``latentbench.drift.measures``: drift measures, :class:`~latentbench.drift.measures.DriftAccumulator`
  (one streaming pass for every measure) and :func:`drift_measures` (the DAG job's function);
- ``latentbench.drift.demo_dense``: the demo's dense depth/segmentation stand-in net;
- ``latentbench.drift.probe``: the latent condition probe (§8).

Public API (DESIGN.md): :func:`drift`. Imports are lazy: importing this package loads no
torch, OpenCV or model code.

The DAG's drift job (one pass over a tokenizer's reconstructions)::

    from latentbench.drift.measures import drift_measures
    result = drift_measures(
        pairs,                       # iterable of (originals, reconstructions), uint8 (B, H, W, 3) RGB
        ["canny", "depth", "seg", "spatial", "identity", "face_at_r", "clip", "dinov2"],
        projector_names=names,       # role -> projector; {} = the paper's; the demo:
        projector_options=options,   #   names, options = projectors.demo.demo_projector_config(dense, cnn)
        weights_dir=weights_dir, device=device,
        options={"map_distance": "l1", "seg_distance": "colour", "identity_missing": "skip",
                 "face_at_r": "recall", "preprocess": "centre_crop_then_resize", "resolution": None,
                 "detect_resolution": "native"},
    )
    # -> {"canny": float, ..., "dinov2": float (NaN if undefined, None if not run),
    #     "n_images", "not_run": {condition: "not run: needs ..."}, "projectors": {role: name},
    #     "versions", "options", "n_faces_original", "n_faces_reconstruction", "n_faces_both"}
"""

from __future__ import annotations

from typing import Any

__all__ = ["drift", "drift_measures"]


def drift(originals, reconstructions, condition: str, **options: Any) -> float:
    """Mean per-image drift of ``condition`` between uint8 RGB (N, H, W, 3) arrays.

    ``condition`` in canny, depth, seg, spatial, identity, face_at_r, clip, dinov2 (the first
    four lower-better drifts, the rest higher-better similarities). Projectors: ``projectors=``
    {role: projector}, or built from the registry with the paper defaults, overridden by
    ``projector_names=`` {role: name} (e.g. {"face": "dlib-face"}), with factory kwargs
    ``projector_options=`` {role: {...}} and weights from ``weights_dir=``; ``device=``,
    ``batch_size=``. Measure options: map_distance (l1|l2), seg_distance (colour|label),
    identity_missing (skip|zero), face_at_r (recall|ratio), preprocess
    (centre_crop_then_resize|resize_then_crop) with resolution, detect_resolution
    (native|controlnet: the map detectors at ControlNet's 512/384/512, maps resized back).
    See ``latentbench.drift.measures``.
    """
    from latentbench.drift.measures import drift as _drift

    return _drift(originals, reconstructions, condition, **options)


def drift_measures(pairs, conditions=None, **kwargs: Any) -> dict:
    """Every requested measure in one pass over (originals, reconstructions) batches; see
    :func:`latentbench.drift.measures.drift_measures`."""
    from latentbench.drift.measures import CONDITIONS
    from latentbench.drift.measures import drift_measures as _drift_measures

    return _drift_measures(pairs, CONDITIONS if conditions is None else conditions, **kwargs)

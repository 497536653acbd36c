"""Autoencoder-induced condition drift (Seesaw Def. 5.1, Eq. 3; spec metrics-ifid-seesaw §7).

Delta_P(E, D) = E_x d(P(x), P(D(E(x)))), for every condition of the study, in one streaming
pass over (original, reconstruction) batches (:class:`DriftAccumulator`): each batch's maps and
embeddings are reduced to running sums at once, so no condition map is held beyond its batch.

Per condition (lower-better drifts, higher-better similarities):
- ``canny``, ``depth``: ``map_distance`` (default ``l1``: mean |a - b| over pixels) of the
  normalised [0, 1] maps, per image, averaged over images ("All condition maps are normalized
  prior to distance calculation" [PAPER A.1.2]; ``l2`` = mean squared difference).
- ``seg``: ``seg_distance`` ``colour`` (default: ``map_distance`` over pixels and the 3 channels
  of the palette colour map / 255) or ``label`` (fraction of pixels whose classes differ).
- ``spatial`` = (canny + depth + seg) / 3 [PAPER A.1.2; checked on all 33 Table 5 rows].
- ``identity``: mean cosine of the normed embeddings of the largest faces, over images with a
  face in both (``identity_missing: skip``, default) or over images with a face in the
  original, a missed reconstruction counting 0 (``zero``).
- ``face_at_r``: ``recall`` (default) = #(face in original and reconstruction) / #(face in
  original); ``ratio`` = #(face in reconstruction) / #(face in original) (seesaw-notes §2.5).
- ``clip``, ``dinov2``: mean cosine similarity of the two embeddings.
Undefined values (no face in any original) are NaN, with the counts that explain them.

Pre-processing (seesaw-notes §2.9): with ``resolution`` set, both image sets are brought to
``resolution``^2 by ``preprocess`` = ``centre_crop_then_resize`` (the seed's order, default)
or ``resize_then_crop`` (torchvision Resize + CenterCrop, the spec's order); ``resolution``
None (default) uses the arrays as given (the DAG's images are already 256^2).

Detection resolution (spec §7.2, seesaw-notes §2.3): ``detect_resolution`` ``native`` (default)
runs the map projectors (canny, depth, seg) on the images as given; ``controlnet`` runs each at
ControlNet's detect resolution (short side 512 / 384 / 512, ControlNet's ``resize_image``) and
resizes its map back (bilinear; nearest for seg labels), whichever backend serves the role
(``latentbench.drift.projectors.detect_resolution``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from latentbench.drift.projectors import CONDITION_ROLES, check_images
from latentbench.drift.projectors.detect_resolution import (
    DETECT_RESOLUTIONS,
    detect_at_role,
)

__all__ = ["DriftAccumulator", "DriftOptions", "drift", "drift_measures", "map_distance", "preprocess_images"]

MAP_DISTANCES = ("l1", "l2")
SEG_DISTANCES = ("colour", "label")
IDENTITY_MISSING = ("skip", "zero")
FACE_AT_R = ("recall", "ratio")
PREPROCESS = ("centre_crop_then_resize", "resize_then_crop")
CONDITIONS = tuple(CONDITION_ROLES)


@dataclass(frozen=True)
class DriftOptions:
    """The choices behind a drift number; recorded with every result."""

    map_distance: str = "l1"
    seg_distance: str = "colour"
    identity_missing: str = "skip"
    face_at_r: str = "recall"
    preprocess: str = "centre_crop_then_resize"
    resolution: int | None = None
    detect_resolution: str = "native"

    def __post_init__(self) -> None:
        for key, allowed in (
            ("map_distance", MAP_DISTANCES),
            ("seg_distance", SEG_DISTANCES),
            ("identity_missing", IDENTITY_MISSING),
            ("face_at_r", FACE_AT_R),
            ("preprocess", PREPROCESS),
            ("detect_resolution", DETECT_RESOLUTIONS),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}: expected one of {allowed}, got {getattr(self, key)!r}")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution <= 0):
            raise ValueError(f"resolution: expected a positive integer or None, got {self.resolution!r}")

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> DriftOptions:
        """Build from a config mapping; unknown keys raise naming them."""
        options = dict(options or {})
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"drift options: unknown key(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**options)


def map_distance(a: np.ndarray, b: np.ndarray, kind: str = "l1") -> np.ndarray:
    """Per-image distance of two batches of [0, 1] maps (N, ...): mean |a-b| or mean (a-b)^2."""
    if a.shape != b.shape:
        raise ValueError(f"condition maps: shapes differ, {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    diff = np.abs(diff) if kind == "l1" else diff * diff
    return diff.reshape(len(diff), -1).mean(axis=1)


def preprocess_images(images: np.ndarray, resolution: int, order: str = "centre_crop_then_resize") -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, resolution, resolution, 3), PIL bicubic, in the given order.

    ``centre_crop_then_resize``: the largest centred square, then resize (the seed's
    "center-cropped and resized"); ``resize_then_crop``: short side to ``resolution``, then the
    centred crop (torchvision Resize(r) + CenterCrop(r)).
    """
    from PIL import Image

    if order not in PREPROCESS:
        raise ValueError(f"preprocess: expected one of {PREPROCESS}, got {order!r}")
    out = []
    for img in check_images(images):
        h, w = img.shape[:2]
        if order == "centre_crop_then_resize":
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            img = img[top : top + side, left : left + side]
            if side != resolution:
                img = np.asarray(Image.fromarray(img).resize((resolution, resolution), Image.BICUBIC))
        else:
            if min(h, w) != resolution:
                nh, nw = (resolution, int(resolution * w / h)) if h <= w else (int(resolution * h / w), resolution)
                img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
                h, w = nh, nw
            top, left = round((h - resolution) / 2.0), round((w - resolution) / 2.0)
            img = img[top : top + resolution, left : left + resolution]
        out.append(img)
    return np.stack(out)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) arrays, float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


class DriftAccumulator:
    """Running sums of every requested drift measure over (original, reconstruction) batches.

    ``projectors``: role -> projector (``latentbench.drift.projectors.resolve_projectors``);
    ``not_run``: role -> reason, for roles whose projector could not be built; a condition whose
    roles are missing is reported as not run. ``update`` takes uint8 RGB (N, H, W, 3) batches;
    ``result`` returns the output dict described in :func:`drift_measures`.
    """

    def __init__(
        self,
        projectors: dict[str, Any],
        conditions: Iterable[str] = CONDITIONS,
        options: DriftOptions | dict | None = None,
        not_run: dict[str, str] | None = None,
    ) -> None:
        self.options = options if isinstance(options, DriftOptions) else DriftOptions.from_dict(options)
        self.conditions = list(dict.fromkeys(conditions))
        unknown = [c for c in self.conditions if c not in CONDITION_ROLES]
        if unknown:
            raise ValueError(f"conditions: unknown {unknown}; known: {', '.join(CONDITIONS)}")
        self.projectors = dict(projectors)
        self.not_run: dict[str, str] = {}
        for cond in self.conditions:
            missing = [r for r in CONDITION_ROLES[cond] if r not in self.projectors]
            if missing:
                reasons = [(not_run or {}).get(r, f"no projector for role {r!r}") for r in missing]
                self.not_run[cond] = "; ".join(dict.fromkeys(reasons))
        self.active = [c for c in self.conditions if c not in self.not_run]
        self.roles = list(dict.fromkeys(r for c in self.active for r in CONDITION_ROLES[c]))
        self.n_images = 0
        self._sums: dict[str, float] = {r: 0.0 for r in ("canny", "depth", "seg", "clip", "dinov2")}
        self._faces = {"original": 0, "reconstruction": 0, "both": 0}
        self._identity_sum = 0.0

    def update(self, originals: np.ndarray, reconstructions: np.ndarray) -> None:
        """Add one batch of pairs (uint8 RGB (N, H, W, 3) each, same shape)."""
        x = check_images(originals, "originals")
        y = check_images(reconstructions, "reconstructions")
        if self.options.resolution is not None:
            x = preprocess_images(x, self.options.resolution, self.options.preprocess)
            y = preprocess_images(y, self.options.resolution, self.options.preprocess)
        if x.shape != y.shape:
            raise ValueError(f"reconstructions: shape {y.shape} differs from the originals' {x.shape}")
        if len(x) == 0:
            return
        opts = self.options
        for role in self.roles:
            proj = self.projectors[role]
            if role in ("canny", "depth"):
                ma, mb = (detect_at_role(role, proj, im, opts.detect_resolution) for im in (x, y))
                self._sums[role] += float(map_distance(ma, mb, opts.map_distance).sum())
            elif role == "seg":
                la, lb = (detect_at_role(role, proj.labels, im, opts.detect_resolution) for im in (x, y))
                if opts.seg_distance == "label":
                    d = (la != lb).reshape(len(la), -1).mean(axis=1)
                else:
                    pal = np.asarray(proj.palette, np.float32) / 255.0
                    d = map_distance(pal[la], pal[lb], opts.map_distance)
                self._sums[role] += float(d.sum())
            elif role == "face":
                self._update_faces(proj.largest_faces(x), proj.largest_faces(y))
            else:  # clip, dinov2
                self._sums[role] += float(_cosine(proj(x), proj(y)).sum())
        self.n_images += len(x)

    def _update_faces(self, faces_x: list, faces_y: list) -> None:
        for fx, fy in zip(faces_x, faces_y):
            self._faces["original"] += fx is not None
            self._faces["reconstruction"] += fy is not None
            if fx is not None and fy is not None:
                self._faces["both"] += 1
                self._identity_sum += float(np.dot(fx.embedding.astype(np.float64), fy.embedding.astype(np.float64)))

    def result(self) -> dict[str, Any]:
        """Every requested measure (float, NaN where undefined, None where not run) and its provenance."""
        n = self.n_images
        mean = {r: (self._sums[r] / n if n else math.nan) for r in self._sums}
        f = self._faces
        identity_den = f["both"] if self.options.identity_missing == "skip" else f["original"]
        face_num = f["both"] if self.options.face_at_r == "recall" else f["reconstruction"]
        values = {
            "canny": mean["canny"],
            "depth": mean["depth"],
            "seg": mean["seg"],
            "spatial": (mean["canny"] + mean["depth"] + mean["seg"]) / 3.0,
            "identity": self._identity_sum / identity_den if identity_den else math.nan,
            "face_at_r": face_num / f["original"] if f["original"] else math.nan,
            "clip": mean["clip"],
            "dinov2": mean["dinov2"],
        }
        out: dict[str, Any] = {c: (values[c] if c in self.active else None) for c in self.conditions}
        out.update(
            n_images=n,
            not_run=dict(self.not_run),
            projectors={r: getattr(self.projectors[r], "name", type(self.projectors[r]).__name__) for r in self.roles},
            versions={r: self.projectors[r].version for r in self.roles if hasattr(self.projectors[r], "version")},
            options=asdict(self.options),
        )
        if "face" in self.roles:
            out.update(
                n_faces_original=f["original"],
                n_faces_reconstruction=f["reconstruction"],
                n_faces_both=f["both"],
            )
        return out


def drift_measures(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    conditions: Iterable[str] = CONDITIONS,
    projectors: dict[str, Any] | None = None,
    not_run: dict[str, str] | None = None,
    options: DriftOptions | dict | None = None,
    projector_names: dict[str, str] | None = None,
    projector_options: dict[str, dict] | None = None,
    weights_dir=None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Every requested drift measure in one pass over ``pairs`` (an iterable of uint8 RGB
    (originals, reconstructions) batches) — the function the DAG's drift job calls.

    Projectors: given (role -> projector, with ``not_run`` for missing roles), or resolved from
    ``projector_names`` / ``projector_options`` / ``weights_dir`` (see
    ``projectors.resolve_projectors``). Returns a dict: one key per condition (float; NaN
    where undefined; None where not run), ``n_images``, ``not_run`` (condition -> "not run:
    needs ..."), ``projectors`` (role -> projector name), ``versions``, ``options`` and, with a
    face role, ``n_faces_original`` / ``n_faces_reconstruction`` / ``n_faces_both``.
    """
    conditions = list(conditions)
    if projectors is None:
        from latentbench.drift.projectors import resolve_projectors

        projectors, not_run = resolve_projectors(conditions, projector_names, projector_options, weights_dir, device)
    acc = DriftAccumulator(projectors, conditions, options, not_run)
    for originals, reconstructions in pairs:
        acc.update(originals, reconstructions)
    return acc.result()


def drift(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    condition: str,
    projectors: dict[str, Any] | None = None,
    projector_names: dict[str, str] | None = None,
    projector_options: dict[str, dict] | None = None,
    weights_dir=None,
    device: str = "cpu",
    batch_size: int = 32,
    **options: Any,
) -> float:
    """Mean per-image drift (or similarity) of one ``condition`` for uint8 RGB (N, H, W, 3) arrays.

    ``condition`` in canny, depth, seg, spatial, identity, face_at_r, clip, dinov2. Projectors
    come from ``projectors`` (role -> projector) or are built from the registry
    (``projector_names`` role -> name overrides the paper defaults; ``projector_options`` role ->
    factory kwargs; ``weights_dir``); a missing weight raises WeightMissing ("not run: needs
    ..."). ``options`` are :class:`DriftOptions` fields (map_distance, seg_distance,
    identity_missing, face_at_r, preprocess, resolution, detect_resolution).
    """
    if condition not in CONDITION_ROLES:
        raise ValueError(f"condition: expected one of {', '.join(CONDITIONS)}, got {condition!r}")
    x = check_images(originals, "originals")
    y = check_images(reconstructions, "reconstructions")
    if projectors is None:
        from latentbench.drift.projectors import DEFAULT_PROJECTORS, build_projector

        names = {**DEFAULT_PROJECTORS, **(projector_names or {})}
        projectors = {
            role: build_projector(names[role], **{"weights": weights_dir, "device": device, **(projector_options or {}).get(role, {})})
            for role in CONDITION_ROLES[condition]
        }
    acc = DriftAccumulator(projectors, [condition], DriftOptions.from_dict(options))
    if acc.not_run:
        raise ValueError(f"projectors: {acc.not_run[condition]}")
    for i in range(0, len(x), batch_size):
        acc.update(x[i : i + batch_size], y[i : i + batch_size])
    return float(acc.result()[condition])

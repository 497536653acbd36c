"""The embedded demo's stand-in projectors (seesaw-notes §4), built from DAG-trained nets.

- ``demo-dense-depth`` (role depth): the dense demo net's depth head, negated so that it is
  oriented like MiDaS' relative inverse depth (near = bright), then the paper's normalisation
  (``midas.normalise_depth``: min-max, x255, truncate).
- ``demo-dense-seg`` (role seg): its class map, rendered with the first K ADE20K colours.
- ``demo-object`` (role face): object recall / identity in place of Face@R / Identity; the
  "detector" is the dense net's foreground (class != 0), the box that of its largest
  4-connected component; the embedding is ``demo-cnn``'s feature of the box crop (resized to
  the image size, bilinear), L2-normalised.
- ``demo-cnn-final`` (role clip) and ``demo-cnn-stages`` (role dinov2): two different demo
  embeddings, ``demo-cnn``'s final (penultimate, 128-d) features and the concatenated
  global-average-pooled features of all its stages.

Factories take ``weights`` = the dense net's file (``demo_dense.save_dense_demo_net``) and/or
``feature_weights`` = the demo-cnn file (``latentbench.features.demo_net``); a missing file raises
FileNotFoundError naming it. Every number they produce is labelled with the projector's name.
"""

from __future__ import annotations

import numpy as np
import torch

from latentbench.drift.projectors import (
    Face,
    check_images,
    largest_face,
    register_projector,
)
from latentbench.drift.projectors.ade20k import ADE_PALETTE


def _dense(weights, device):
    from latentbench.drift.demo_dense import load_dense_demo_net

    return load_dense_demo_net(weights, device)


def _demo_cnn(feature_weights, device):
    from latentbench.features.demo_net import load_demo_net

    if feature_weights is None:
        raise FileNotFoundError("feature_weights: the demo-cnn weight file is required by this stand-in")
    return load_demo_net(feature_weights).to(device)


def _as_float(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(check_images(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


class DemoDenseDepth:
    """Stand-in for MiDaS: uint8 (N, H, W, 3) -> normalised depth maps float32 (N, H, W) in [0, 1]."""

    kind = "map"

    def __init__(self, weights=None, device="cpu") -> None:
        self.net = _dense(weights, device)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from latentbench.drift.demo_dense import predict
        from latentbench.drift.projectors.midas import normalise_depth

        depth, _ = predict(self.net, check_images(images))
        # The net regresses the synthetic set's distance (near = small); MiDaS, and the spec,
        # give relative INVERSE depth (near = large), so the map is negated before the min-max
        # normalisation: near pixels come out bright, as in ControlNet's depth maps. (-d rather
        # than 1/d: the regressed distance may touch or cross 0 on a reconstruction.) The drift
        # does not depend on this orientation: normalise(-d) = 1 - normalise(d) before the uint8
        # truncation, and L1 (or L2) of two maps is unchanged when both are flipped; the
        # truncation (floor vs ceil of 255 t) moves a pixel's difference by at most 1/255.
        return np.stack([normalise_depth(-d) for d in depth]).astype(np.float32) / 255.0


class DemoDenseSeg:
    """Stand-in for UniFormer: uint8 (N, H, W, 3) -> class maps int64 (N, H, W); ADE colours 0..K-1."""

    kind = "labels"

    def __init__(self, weights=None, device="cpu") -> None:
        self.net = _dense(weights, device)
        self.palette = ADE_PALETTE[: self.net.config["num_classes"]]

    def labels(self, images: np.ndarray) -> np.ndarray:
        from latentbench.drift.demo_dense import predict

        return predict(self.net, check_images(images))[1]


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box (x1, y1, x2, y2), x2/y2 exclusive, of the largest 4-connected True region; None if empty."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class DemoObject:
    """Stand-in for InsightFace: the dense net's largest foreground object and its demo-cnn embedding."""

    kind = "face"

    def __init__(self, weights=None, device="cpu", feature_weights=None) -> None:
        self.device = torch.device(device)
        self.net = _dense(weights, device)
        self.features = _demo_cnn(feature_weights, device)

    @torch.inference_mode()
    def largest_faces(self, images: np.ndarray) -> list[Face | None]:
        import torch.nn.functional as F

        from latentbench.drift.demo_dense import predict

        images = check_images(images)
        _, seg = predict(self.net, images)
        out: list[Face | None] = []
        for img, labels in zip(images, seg):
            box = largest_component_box(labels != 0)
            if box is None:
                out.append(None)
                continue
            x1, y1, x2, y2 = box
            crop = _as_float(img[None, y1:y2, x1:x2], self.device)
            crop = F.interpolate(crop, size=img.shape[:2], mode="bilinear", align_corners=False)
            emb = self.features.features(crop)[0].float()
            emb = (emb / emb.norm().clamp_min(1e-12)).cpu().numpy()
            out.append(largest_face([Face((x1, y1, x2, y2), emb)]))
        return out


class DemoCnnEmbedding:
    """Stand-in for CLIP / DINOv2: demo-cnn's final features (``stages=False``) or all stages pooled."""

    kind = "embedding"

    def __init__(self, weights=None, device="cpu", feature_weights=None, stages: bool = False) -> None:
        # ``weights`` is the weights directory the resolver passes to every projector; this
        # stand-in reads only ``feature_weights``.
        del weights
        self.device = torch.device(device)
        self.net = _demo_cnn(feature_weights, device)
        self.stages = stages
        widths = self.net.config["widths"]
        self.dim = int(sum(widths) if stages else widths[-1])

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = _as_float(images, self.device)
        if self.stages:
            emb = torch.cat([m.mean(dim=(2, 3)) for m in self.net.feature_maps(x)], 1)
        else:
            emb = self.net.features(x)
        return emb.float().cpu().numpy()


DEMO_PROJECTORS: dict[str, str] = {
    "depth": "demo-dense-depth",
    "seg": "demo-dense-seg",
    "face": "demo-object",
    "clip": "demo-cnn-final",
    "dinov2": "demo-cnn-stages",
}


def demo_projector_config(dense_weights, demo_cnn_weights) -> tuple[dict[str, str], dict[str, dict]]:
    """(projector_names, projector_options) that plug the demo's stand-ins into
    ``resolve_projectors`` / ``drift_measures``; Canny stays the real one."""
    options = {
        "depth": {"weights": dense_weights},
        "seg": {"weights": dense_weights},
        "face": {"weights": dense_weights, "feature_weights": demo_cnn_weights},
        "clip": {"feature_weights": demo_cnn_weights},
        "dinov2": {"feature_weights": demo_cnn_weights},
    }
    return dict(DEMO_PROJECTORS), options


register_projector("demo-dense-depth", "depth")(DemoDenseDepth)
register_projector("demo-dense-seg", "seg")(DemoDenseSeg)
register_projector("demo-object", "face")(DemoObject)
register_projector("demo-cnn-final", "clip")(lambda weights=None, device="cpu", feature_weights=None: DemoCnnEmbedding(weights, device, feature_weights, stages=False))
register_projector("demo-cnn-stages", "dinov2")(lambda weights=None, device="cpu", feature_weights=None: DemoCnnEmbedding(weights, device, feature_weights, stages=True))

"""Faces as the Seesaw paper found them: InsightFace ``buffalo_s`` through onnxruntime (spec §7.3).

``FaceAnalysis(name=<buffalo_s directory>, allowed_modules=["detection", "recognition"])``
(SCRFD-500M detector + MobileFaceNet w600k_mbf, 512-d), ``prepare(ctx_id, det_thresh=0.5,
det_size=(640, 640))``: det_size is passed explicitly because insightface >= 1.0 otherwise runs
SCRFD at both 128^2 and 640^2 (seesaw-notes §2.4); the installed version is recorded in
``self.version``. Input BGR uint8 (we convert from RGB); per image the largest face by box
area; its ``normed_embedding`` (L2-normalised). The models are **non-commercial research
only** (InsightFace's licence for buffalo_s).

Weights: a directory holding buffalo_s's ``*.onnx`` files, or the manifest's ``buffalo_s.zip``
in the weights directory, which is unpacked once beside itself (``buffalo_s/``). Nothing is
downloaded: ``name`` is given as a directory, which FaceAnalysis loads as is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from latentbench.drift.projectors import (
    Face,
    check_images,
    largest_face,
    manifest_weight,
    register_projector,
)

MANIFEST_ENTRY = "insightface-buffalo-s"
MODEL_NAME = "buffalo_s"


def buffalo_directory(weights) -> Path:
    """The directory of buffalo_s's ONNX files: ``weights`` itself if it holds ``*.onnx``, else
    ``<weights>/buffalo_s/``, else the manifest's zip (unpacked beside itself on first use).
    Missing -> WeightMissing."""
    for candidate in ([Path(weights).expanduser(), Path(weights).expanduser() / MODEL_NAME] if weights is not None else []):
        if candidate.is_dir() and any(candidate.glob("*.onnx")):
            return candidate
    archive = manifest_weight(MANIFEST_ENTRY, weights)
    target = archive.with_suffix("")
    if not (target.is_dir() and any(target.rglob("*.onnx"))):
        tmp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{target.name}."))
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
            os.replace(tmp, target)  # atomic: a half-unpacked folder never has the final name
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    onnx_dirs = sorted({p.parent for p in target.rglob("*.onnx")})
    if len(onnx_dirs) != 1:
        raise ValueError(f"{archive}: expected buffalo_s's ONNX files in one folder, found {onnx_dirs or 'none'}")
    return onnx_dirs[0]


class InsightFaceProjector:
    """uint8 RGB (N, H, W, 3) -> the largest face per image (``Face`` with a 512-d normed embedding) or None."""

    kind = "face"

    def __init__(self, weights=None, device="cpu", det_size=(640, 640), det_thresh: float = 0.5) -> None:
        import insightface
        from insightface.app import FaceAnalysis

        directory = buffalo_directory(weights)
        cuda = str(device).startswith("cuda")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.app = FaceAnalysis(name=str(directory), allowed_modules=["detection", "recognition"], providers=providers)
        if "recognition" not in self.app.models:
            raise ValueError(f"{directory}: no recognition model among the ONNX files (buffalo_s has w600k_mbf.onnx)")
        self.det_size = tuple(int(v) for v in det_size)
        self.det_thresh = det_thresh
        self.app.prepare(ctx_id=0 if cuda else -1, det_thresh=det_thresh, det_size=self.det_size)
        self.version = str(insightface.__version__)

    def largest_faces(self, images: np.ndarray) -> list[Face | None]:
        out = []
        for img in check_images(images):
            found = self.app.get(np.ascontiguousarray(img[..., ::-1]))  # InsightFace reads BGR (cv2)
            faces = [
                Face(tuple(float(v) for v in f.bbox[:4]), np.asarray(f.normed_embedding, np.float32), float(f.det_score))
                for f in found
                if f.embedding is not None
            ]
            out.append(largest_face(faces))
        return out


register_projector("insightface-buffalo-s", "face")(InsightFaceProjector)

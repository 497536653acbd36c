"""Faces with dlib, the offline backend (``face_backend: dlib``; seesaw-notes §3).

Not the paper's detector: dlib's HOG frontal-face detector (up-sampled once, as the
``face_recognition`` package's default) + the 5-point shape predictor + dlib's ResNet face
descriptor (128-d, L2-normalised here so the identity cosine is a dot product). The model files
ship in the ``face-recognition-models`` wheel (CC0); its module import fails on new setuptools,
so the files are located by path (weights manifest entries ``dlib-*``), or taken from the
weights directory. Numbers from this backend are labelled ``dlib-face``, never as InsightFace's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentbench.drift.projectors import (
    Face,
    check_images,
    largest_face,
    manifest_weight,
    register_projector,
)

SHAPE_ENTRY = "dlib-shape-predictor-5"
RECOGNITION_ENTRY = "dlib-face-recognition-resnet"


class DlibFaceProjector:
    """uint8 RGB (N, H, W, 3) -> the largest face per image (``Face`` with a 128-d normed embedding) or None."""

    kind = "face"

    def __init__(self, weights=None, device=None, upsample: int = 1, jitters: int = 1) -> None:
        del device  # dlib-bin runs on the CPU
        import dlib

        shape_file: Path = manifest_weight(SHAPE_ENTRY, weights)
        rec_file: Path = manifest_weight(RECOGNITION_ENTRY, weights)
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(shape_file))
        self.recogniser = dlib.face_recognition_model_v1(str(rec_file))
        self.upsample, self.jitters = upsample, jitters
        self.version = str(dlib.__version__)

    def largest_faces(self, images: np.ndarray) -> list[Face | None]:
        out: list[Face | None] = []
        for img in check_images(images):  # dlib takes RGB
            rects = list(self.detector(img, self.upsample))
            boxes = [Face((r.left(), r.top(), r.right(), r.bottom()), np.zeros(0, np.float32)) for r in rects]
            best = largest_face(boxes)
            if best is None:
                out.append(None)
                continue
            rect = rects[boxes.index(best)]
            desc = np.asarray(self.recogniser.compute_face_descriptor(img, self.shape_predictor(img, rect), self.jitters), np.float32)
            out.append(Face(best.bbox, desc / np.linalg.norm(desc)))
        return out


register_projector("dlib-face", "face")(DlibFaceProjector)

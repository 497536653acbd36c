"""Face projectors: dlib (offline backend) on real faces from scikit-image's wheel, and the
InsightFace path's pre/post-processing on small ONNX models with buffalo_s's signatures."""

import numpy as np
import pytest
import torch

from latentbench.drift import drift_measures
from latentbench.drift.projectors import build_projector


# ------------------------------------------------------------------ dlib (real faces)
@pytest.fixture(scope="module")
def dlib_faces():
    return build_projector("dlib-face")


@pytest.fixture(scope="module")
def astronaut():
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def _lfw_face(index: int, size: int = 120) -> np.ndarray:
    import cv2
    from skimage import data

    face = (data.lfw_subset()[index] * 255).astype(np.uint8)  # 25x25 grey; 0-99 faces, 100-199 not
    return np.repeat(cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2)


def test_dlib_detects_the_astronaut_and_not_lfw_non_faces(dlib_faces, astronaut):
    face = dlib_faces.largest_faces(astronaut[None])[0]
    x1, y1, x2, y2 = face.bbox
    assert 60 < (x1 + x2) / 2 < 160 and 20 < (y1 + y2) / 2 < 110  # her face, upper left of the photo
    assert face.embedding.shape == (128,) and np.linalg.norm(face.embedding) == pytest.approx(1, abs=1e-5)
    assert dlib_faces.largest_faces(np.stack([_lfw_face(i) for i in (100, 101, 102)])) == [None, None, None]


@pytest.mark.parametrize("lfw_index", [0, 1])  # detection order: astronaut first (0), lfw face first (1)
def test_dlib_keeps_the_largest_face(dlib_faces, astronaut, lfw_index):
    canvas = np.zeros((256, 384, 3), np.uint8)
    canvas[:, :256] = astronaut
    canvas[60:180, 260:380] = _lfw_face(lfw_index)
    rects = list(dlib_faces.detector(canvas, 1))
    assert len(rects) == 2
    face = dlib_faces.largest_faces(canvas[None])[0]
    assert (face.bbox[0] + face.bbox[2]) / 2 > 256  # the enlarged lfw face, not the astronaut's smaller one


def test_dlib_identity_is_one_for_identical_and_lower_when_blurred(dlib_faces, astronaut):
    import cv2

    x = astronaut[None]
    same = drift_measures([(x, x.copy())], ["identity", "face_at_r"], projectors={"face": dlib_faces})
    assert same["identity"] == pytest.approx(1.0, abs=1e-6) and same["face_at_r"] == 1.0
    blurred = drift_measures([(x, cv2.GaussianBlur(astronaut, (0, 0), 1.5)[None])], ["identity"], projectors={"face": dlib_faces})
    assert 0.5 < blurred["identity"] < 0.995
    assert dlib_faces.version


# ------------------------------------------------------------------ InsightFace (synthetic ONNX models)
class _FakeSCRFD(torch.nn.Module):
    """SCRFD-500M's signature (input NCHW, 9 outputs: scores/boxes/keypoints at strides 8, 16, 32,
    two anchors per cell, no batch dim). Score = sigmoid(20 x (mean of the network's channel 0
    over the 8x8 cell - 0.5)): only cells that are red *after* InsightFace's BGR->RGB swap fire;
    box half-size = (1 + mean channel 1 + 1) cells, so a yellow blob gives a larger box."""

    def forward(self, x):
        outs = {"score": [], "bbox": [], "kps": []}
        for stride in (8, 16, 32):
            pooled = torch.nn.functional.avg_pool2d(x, stride)  # [1, 3, H/s, W/s]
            cells = pooled[0].flatten(1).t()  # [cells, 3]
            on = torch.sigmoid(20 * (cells[:, :1] - 0.5)) * (1.0 if stride == 8 else 0.0)
            half = 1.0 + (cells[:, 1:2] + 1.0)
            outs["score"].append(on.repeat_interleave(2, 0))
            outs["bbox"].append(half.repeat(1, 4).repeat_interleave(2, 0))
            template = cells.new_tensor([[-0.5, -0.5, 0.5, -0.5, 0.0, 0.0, -0.4, 0.5, 0.4, 0.5]])
            outs["kps"].append((template * half).repeat_interleave(2, 0))
        return (*outs["score"], *outs["bbox"], *outs["kps"])


class _FakeRecognition(torch.nn.Module):
    """w600k_mbf's signature: [N, 3, 112, 112] -> [N, 512]; a fixed random projection of 4x4 pooled pixels."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 16, 512)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def _export(model, example, path, names, dynamic):
    torch.onnx.export(model, (example,), str(path), input_names=["input.1"], output_names=names, dynamo=False,
                      dynamic_axes={"input.1": dynamic}, opset_version=17)


@pytest.fixture(scope="module")
def buffalo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights") / "buffalo_s"
    root.mkdir()
    names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    _export(_FakeSCRFD().eval(), torch.zeros(1, 3, 640, 640), root / "det_500m.onnx", names, {2: "h", 3: "w"})
    _export(_FakeRecognition().eval(), torch.zeros(1, 3, 112, 112), root / "w600k_mbf.onnx", ["embedding"], {0: "n"})
    return root


def _blob_image(colour, box):
    img = np.zeros((256, 256, 3), np.uint8)
    y1, y2, x1, x2 = box
    img[y1:y2, x1:x2] = colour
    return img


def test_insightface_path_bgr_order_largest_face_and_normed_embedding(buffalo_dir):
    faces = build_projector("insightface-buffalo-s", weights=buffalo_dir.parent)
    assert faces.det_size == (640, 640) and faces.version
    assert set(faces.app.models) == {"detection", "recognition"}
    red = _blob_image((255, 0, 0), (100, 160, 100, 160))
    blue = _blob_image((0, 0, 255), (100, 160, 100, 160))
    both = red.copy()
    both[20:60, 180:240] = (255, 255, 0)  # yellow: red and green -> larger boxes
    got = faces.largest_faces(np.stack([red, blue, both]))
    assert got[0] is not None and got[1] is None  # only red fires: the projector handed BGR to InsightFace
    x1, y1, x2, y2 = got[0].bbox
    assert 100 <= (x1 + x2) / 2 <= 160 and 100 <= (y1 + y2) / 2 <= 160
    assert got[0].embedding.shape == (512,) and np.linalg.norm(got[0].embedding) == pytest.approx(1, abs=1e-5)
    x1, y1, x2, y2 = got[2].bbox
    assert 180 <= (x1 + x2) / 2 <= 240 and 20 <= (y1 + y2) / 2 <= 60  # the larger (yellow) detection wins
    res = drift_measures([(np.stack([red, both]), np.stack([red, both]))], ["identity", "face_at_r"], projectors={"face": faces})
    assert res["identity"] == pytest.approx(1.0, abs=1e-6) and res["face_at_r"] == 1.0


def test_insightface_unpacks_the_release_zip(buffalo_dir, tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "buffalo_s.zip", "w") as zf:
        for f in buffalo_dir.glob("*.onnx"):
            zf.write(f, f.name)
    faces = build_projector("insightface-buffalo-s", weights=tmp_path)
    assert (tmp_path / "buffalo_s" / "det_500m.onnx").is_file()
    assert faces.largest_faces(_blob_image((255, 0, 0), (100, 160, 100, 160))[None])[0] is not None

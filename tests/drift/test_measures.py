"""Drift measures, options and the streaming accumulator (spec §7.1-7.5, seesaw-notes §2.5, §2.9)."""

import math

import numpy as np
import pytest

from latentbench.drift import drift, drift_measures
from latentbench.drift.measures import (
    DriftAccumulator,
    DriftOptions,
    map_distance,
    preprocess_images,
)
from latentbench.drift.projectors import Face, build_projector, largest_face

from .conftest import blur

ALL = ("canny", "depth", "seg", "spatial", "identity", "face_at_r", "clip", "dinov2")


def test_identical_images_give_zero_drift_and_unit_similarity(synthetic, demo_projectors):
    x = synthetic["image"][:64]
    projectors = {"canny": build_projector("canny"), **demo_projectors}
    res = drift_measures([(x[:40], x[:40].copy()), (x[40:], x[40:].copy())], ALL, projectors=projectors)
    for c in ("canny", "depth", "seg", "spatial"):
        assert res[c] == 0.0, c
    assert res["identity"] == pytest.approx(1.0, abs=1e-6)
    assert res["clip"] == pytest.approx(1.0, abs=1e-6)
    assert res["dinov2"] == pytest.approx(1.0, abs=1e-6)
    assert res["face_at_r"] == 1.0
    assert res["n_images"] == 64 and res["n_faces_original"] > 0
    assert res["projectors"] == {"canny": "canny", "depth": "demo-dense-depth", "seg": "demo-dense-seg",
                                 "face": "demo-object", "clip": "demo-cnn-final", "dinov2": "demo-cnn-stages"}
    assert res["options"]["map_distance"] == "l1" and res["not_run"] == {}


def test_drift_grows_with_blur_strength(synthetic, demo_projectors):
    x = synthetic["image"][:96]
    projectors = {"canny": build_projector("canny"), **demo_projectors}
    runs = [drift_measures([(x, blur(x, s))], ALL, projectors=projectors) for s in (0.5, 1.0, 2.0)]
    for c in ("canny", "depth", "spatial"):
        values = [r[c] for r in runs]
        assert 0 < values[0] < values[1] < values[2], (c, values)
    seg = [r["seg"] for r in runs]  # a class map changes in steps: non-decreasing
    assert 0 < seg[0] <= seg[1] <= seg[2], seg
    for c in ("clip", "dinov2"):
        values = [r[c] for r in runs]
        assert 1 > values[0] > values[1] > values[2], (c, values)
    # the demo regime of seesaw-notes §4: Canny drift ~0.012 at sigma 0.5 and ~0.038 at sigma 1
    assert 0.005 < runs[0]["canny"] < 0.03 and 0.02 < runs[1]["canny"] < 0.07


def test_spatial_is_the_mean_of_the_three_map_drifts(synthetic, demo_projectors):
    x = synthetic["image"][:32]
    res = drift_measures([(x, blur(x, 1.0))], ("canny", "depth", "seg", "spatial"),
                         projectors={"canny": build_projector("canny"), **demo_projectors})
    assert res["spatial"] == pytest.approx((res["canny"] + res["depth"] + res["seg"]) / 3, abs=1e-15)


def test_streaming_result_does_not_depend_on_batching(synthetic, demo_projectors):
    x = synthetic["image"][:50]
    y = blur(x, 0.8)
    projectors = {"canny": build_projector("canny"), **demo_projectors}
    whole = drift_measures([(x, y)], ALL, projectors=projectors)
    parts = drift_measures([(x[i : i + 7], y[i : i + 7]) for i in range(0, 50, 7)], ALL, projectors=projectors)
    assert parts["canny"] == whole["canny"]
    for c in ALL:  # network outputs differ in the last float bits between batch sizes
        assert parts[c] == pytest.approx(whole[c], rel=1e-4, abs=1e-9, nan_ok=True), c


def test_public_drift_matches_the_accumulator(synthetic, demo_projectors):
    x = synthetic["image"][:20]
    y = blur(x, 1.0)
    d = drift(x, y, "depth", projectors=demo_projectors, batch_size=6)
    assert d == pytest.approx(drift_measures([(x, y)], ["depth"], projectors=demo_projectors)["depth"], rel=1e-4)
    assert drift(x, y, "canny") == pytest.approx(map_distance(build_projector("canny")(x), build_projector("canny")(y)).mean())


def test_seg_label_distance_is_the_fraction_of_changed_classes():
    class Stub:
        kind, palette = "labels", np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0]], np.uint8)

        def labels(self, images):
            return images[..., 0].astype(np.int64) // 100  # 0, 1, 2 by the red channel

    x = np.zeros((1, 2, 2, 3), np.uint8)
    y = x.copy()
    y[0, 0, 0, 0] = 100  # one pixel: class 0 -> 1 (colour black -> white: 3 channels of 3)
    y[0, 1, 1, 0] = 200  # one pixel: class 0 -> 2 (black -> red: 1 channel of 3)
    assert drift(x, y, "seg", projectors={"seg": Stub()}, seg_distance="label") == pytest.approx(2 / 4)
    assert drift(x, y, "seg", projectors={"seg": Stub()}) == pytest.approx((3 + 1) / 12)
    assert drift(x, y, "seg", projectors={"seg": Stub()}, map_distance="l2") == pytest.approx((3 + 1) / 12)


class _StubFaces:
    """Faces keyed by the image's first pixel value: 0 -> none, k -> a box of area k^2, embedding e_k."""

    kind = "face"

    def largest_faces(self, images):
        out = []
        for img in images:
            k = int(img[0, 0, 0])
            emb = np.zeros(4, np.float32)
            emb[k % 4] = 1.0
            out.append(largest_face([Face((0, 0, k, k), emb)]) if k else None)
        return out


def _batch(values):
    return np.stack([np.full((2, 2, 3), v, np.uint8) for v in values])


def test_identity_and_face_at_r_counting_rules():
    x = _batch([1, 2, 3, 0, 1])
    y = _batch([1, 3, 0, 2, 1])  # face in both: 0, 1, 4 (cos 1, 0, 1); lost: 2; new: 3
    p = {"face": _StubFaces()}
    res = drift_measures([(x, y)], ["identity", "face_at_r"], projectors=p)
    assert (res["n_faces_original"], res["n_faces_reconstruction"], res["n_faces_both"]) == (4, 4, 3)
    assert res["identity"] == pytest.approx(2 / 3)  # skip: over the 3 pairs
    assert res["face_at_r"] == pytest.approx(3 / 4)  # recall
    zero = drift_measures([(x, y)], ["identity", "face_at_r"], projectors=p, options={"identity_missing": "zero", "face_at_r": "ratio"})
    assert zero["identity"] == pytest.approx(2 / 4)  # the lost face counts 0
    assert zero["face_at_r"] == pytest.approx(4 / 4)  # ratio: 4 reconstructions with a face / 4 originals
    none = drift_measures([(_batch([0, 0]), _batch([1, 1]))], ["identity", "face_at_r"], projectors=p)
    assert math.isnan(none["identity"]) and math.isnan(none["face_at_r"]) and none["n_faces_original"] == 0


def test_largest_face_rule_is_independent_of_order():
    small, big = Face((0, 0, 20, 20), np.ones(2)), Face((5, 5, 35, 35), np.zeros(2))
    assert small.area == 400 and big.area == 900
    assert largest_face([small, big]) is big and largest_face([big, small]) is big
    assert largest_face([]) is None


def test_missing_projector_is_reported_not_faked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    x = np.zeros((2, 32, 32, 3), np.uint8)
    res = drift_measures([(x, x)], ["canny", "depth", "spatial"], weights_dir=tmp_path)
    assert res["canny"] == 0.0
    assert res["depth"] is None and res["spatial"] is None
    assert res["not_run"]["depth"].startswith("not run: needs") and "dpt_hybrid-midas-501f0c75.pt" in res["not_run"]["depth"]


def test_bad_options_and_inputs_raise_naming_the_key():
    with pytest.raises(ValueError, match="seg_distance"):
        DriftOptions(seg_distance="iou")
    with pytest.raises(ValueError, match="unknown key"):
        DriftOptions.from_dict({"face_at": "recall"})
    with pytest.raises(ValueError, match="condition"):
        drift(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8), "edges")
    with pytest.raises(ValueError, match="reconstructions"):
        acc = DriftAccumulator({"canny": build_projector("canny")}, ["canny"])
        acc.update(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 9, 3), np.uint8))


def test_preprocessing_orders():
    from PIL import Image

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (1, 60, 90, 3), dtype=np.uint8)
    a = preprocess_images(wide, 32, "centre_crop_then_resize")
    expected = np.asarray(Image.fromarray(wide[0, :, 15:75]).resize((32, 32), Image.BICUBIC))
    np.testing.assert_array_equal(a[0], expected)
    b = preprocess_images(wide, 32, "resize_then_crop")
    resized = np.asarray(Image.fromarray(wide[0]).resize((48, 32), Image.BICUBIC))
    np.testing.assert_array_equal(b[0], resized[:, 8:40])
    square = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_images(square, 32, "centre_crop_then_resize"), preprocess_images(square, 32, "resize_then_crop"))
    assert DriftOptions().preprocess == "centre_crop_then_resize"  # the seed's order is the default

"""detect_resolution native | controlnet (spec §7.2, seesaw-notes §2.3) and the demo depth orientation."""

import numpy as np
import pytest

from latentbench.drift.measures import DriftAccumulator, DriftOptions, drift_measures
from latentbench.drift.projectors import build_projector
from latentbench.drift.projectors.detect_resolution import (
    CONTROLNET_DETECT_RESOLUTION,
    controlnet_size,
    detect_at,
    detect_at_role,
    resize_image,
)


def _square(shift: int = 0) -> np.ndarray:
    img = np.zeros((1, 256, 256, 3), np.uint8)
    img[0, 64:192, 64 + shift : 192 + shift] = 255
    return img


def test_resize_arithmetic_matches_hand_values_for_non_square_images():
    # 200x300 -> k = 512/200 = 2.56 -> 512 x 768 (both already multiples of 64)
    assert controlnet_size(200, 300, 512) == (512, 768, 2.56)
    # 250x330 -> k = 2.048 -> 512 x 675.84 -> round(10.56) = 11 -> 704
    h, w, k = controlnet_size(250, 330, 512)
    assert (h, w) == (512, 704) and k == pytest.approx(2.048)
    # depth at 384: 300x200 -> k = 1.92 -> 576 x 384
    assert controlnet_size(300, 200, 384)[:2] == (576, 384)
    # down-sampling (k < 1): 1000x700 -> k = 512/700 -> 731.4 -> round(11.43) = 11 -> 704 x 512
    h, w, k = controlnet_size(1000, 700, 512)
    assert (h, w) == (704, 512) and k < 1
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    import cv2

    np.testing.assert_array_equal(resize_image(img, 512), cv2.resize(img, (768, 512), interpolation=cv2.INTER_LANCZOS4))
    big = rng.integers(0, 256, (1000, 700, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_image(big, 512), cv2.resize(big, (512, 704), interpolation=cv2.INTER_AREA))


def test_native_is_exactly_the_projector_itself():
    canny = build_projector("canny")
    x = _square()
    np.testing.assert_array_equal(detect_at_role("canny", canny, x, "native"), canny(x))
    y = _square(1)
    native = drift_measures([(x, y)], ["canny"], projectors={"canny": canny})
    explicit = drift_measures([(x, y)], ["canny"], projectors={"canny": canny}, options={"detect_resolution": "native"})
    assert native["canny"] == explicit["canny"] == pytest.approx(0.0078125, abs=1e-12)
    assert DriftOptions().detect_resolution == "native"


def test_controlnet_canny_runs_at_512_and_comes_back_at_256_near_the_native_edges():
    canny = build_projector("canny")
    seen = []

    def spy(images):
        seen.append(images.shape)
        return canny(images)

    x = _square()
    edges = detect_at_role("canny", spy, x, "controlnet")
    assert seen == [(1, 512, 512, 3)]
    assert edges.shape == (1, 256, 256) and edges.dtype == np.float32
    assert edges.min() >= 0 and edges.max() <= 1 and edges.max() > 0
    assert np.allclose(edges * 255, np.round(edges * 255), atol=1e-4)  # back through uint8, k / 255
    rows, cols = np.nonzero(edges[0] > 0)
    native_rows, native_cols = np.nonzero(canny(x)[0])
    for got, ref in ((rows.min(), native_rows.min()), (rows.max(), native_rows.max()),
                     (cols.min(), native_cols.min()), (cols.max(), native_cols.max())):
        assert abs(int(got) - int(ref)) <= 2, (got, ref)
    # no edges away from the square's border
    assert edges[0, 100:156, 100:156].sum() == 0 and edges[0, :50].sum() == 0


def test_controlnet_seg_labels_come_back_by_nearest():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)

    def labeller(images):  # a label map that varies on the detector's own grid
        assert images.shape[1:3] == (512, 768)
        return (images[..., 0].astype(np.int64) // 32) * 3 + 7

    labels = detect_at_role("seg", labeller, x, "controlnet")
    assert labels.shape == (2, 40, 60) and labels.dtype == np.int64
    possible = {7 + 3 * k for k in range(8)}
    assert set(np.unique(labels).tolist()) <= possible  # only existing labels, no blends
    np.testing.assert_array_equal(detect_at(labeller, x, 512, "nearest", chunk=1), labels)  # chunking changes nothing
    with pytest.raises(ValueError, match="back"):
        detect_at(labeller, x, 512, "bicubic")
    with pytest.raises(ValueError, match="detect_resolution"):
        detect_at_role("seg", labeller, x, "upstream")


def test_controlnet_depth_uses_384_and_bilinear():
    seen = []

    def ramp(images):
        seen.append(images.shape[1:3])
        n, h, w, _ = images.shape
        return np.broadcast_to(np.linspace(0, 1, w, dtype=np.float32), (n, h, w)).copy()

    out = detect_at_role("depth", ramp, np.zeros((1, 256, 256, 3), np.uint8), "controlnet")
    assert seen == [(384, 384)] and CONTROLNET_DETECT_RESOLUTION == {"canny": 512, "depth": 384, "seg": 512}
    assert out.shape == (1, 256, 256)
    row = out[0, 0]
    assert np.all(np.diff(row) >= 0) and row[0] < 0.01 and row[-1] > 0.99  # a smooth ramp, not nearest steps


def test_identical_images_drift_zero_under_controlnet_and_option_is_recorded(synthetic, demo_projectors):
    x = synthetic["image"][:4]
    projectors = {"canny": build_projector("canny"), "depth": demo_projectors["depth"], "seg": demo_projectors["seg"]}
    opts = {"detect_resolution": "controlnet"}
    res = drift_measures([(x, x.copy())], ["canny", "depth", "seg", "spatial"], projectors=projectors, options=opts)
    for c in ("canny", "depth", "seg", "spatial"):
        assert res[c] == 0.0, c
    assert res["options"]["detect_resolution"] == "controlnet"
    # (the 32^2 demo images upsampled 16x have almost no Canny edges, seesaw-notes §4; use 256^2)
    shifted = drift_measures([(_square(), _square(1))], ["canny"], projectors=projectors, options=opts)
    assert 0 < shifted["canny"] < 0.05
    with pytest.raises(ValueError, match="detect_resolution"):
        DriftAccumulator(projectors, ["canny"], {"detect_resolution": "512"})


def test_demo_depth_is_inverse_depth_near_bright(synthetic, demo_projectors):
    x = synthetic["image"][:32]
    truth = synthetic["depth"][:32].astype(np.float32)  # distance: the object (~0.25) is nearer than the background (0.6-0.95)
    pred = demo_projectors["depth"](x)
    near = truth <= np.quantile(truth, 0.25, axis=(1, 2), keepdims=True)
    far = truth >= np.quantile(truth, 0.75, axis=(1, 2), keepdims=True)
    near_mean = np.array([p[m].mean() for p, m in zip(pred, near)])
    far_mean = np.array([p[m].mean() for p, m in zip(pred, far)])
    assert np.mean(near_mean > far_mean) >= 0.9, (near_mean, far_mean)
    assert near_mean.mean() > far_mean.mean() + 0.2

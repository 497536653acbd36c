"""Canny projector: the OpenCV oracle values of seesaw-notes §1 / spec §7.5."""

import numpy as np
import pytest

from latentbench.drift import drift
from latentbench.drift.projectors import build_projector


def _square(shift: int = 0) -> np.ndarray:
    img = np.zeros((1, 256, 256, 3), np.uint8)
    img[0, 64:192, 64 + shift : 192 + shift] = 255
    return img


def test_white_square_has_508_edge_pixels_in_bbox_63_to_191():
    edges = build_projector("canny")(_square())[0]
    assert set(np.unique(edges)) == {0.0, 1.0}
    assert int(edges.sum()) == 508
    rows, cols = np.nonzero(edges)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (63, 191, 63, 191)


def test_one_pixel_shift_gives_drift_0_0078125():
    canny = build_projector("canny")
    a, b = canny(_square()), canny(_square(1))
    assert int((a != b).sum()) == 512
    assert drift(_square(), _square(1), "canny") == pytest.approx(0.0078125, abs=1e-12)


def test_colour_only_edge_is_found_on_rgb_and_lost_on_grey():
    import cv2

    img = np.zeros((1, 256, 256, 3), np.uint8)
    img[0, :, :128] = (200, 0, 0)
    img[0, :, 128:] = (0, 0, 200)
    grey = cv2.cvtColor(img[0], cv2.COLOR_RGB2GRAY)
    assert int(cv2.Canny(grey, 100, 200).astype(bool).sum()) == 0  # equal grey: no edge on the grey image
    assert int(build_projector("canny")(img).sum()) == 256  # the projector keeps the colour edge


def test_rgb_and_bgr_give_identical_maps():
    from skimage import data

    from latentbench.data.synthetic import SyntheticSpec, generate

    canny = build_projector("canny")
    img = generate(SyntheticSpec(20, 32))["image"]
    np.testing.assert_array_equal(canny(img), canny(np.ascontiguousarray(img[..., ::-1])))
    # On a photograph OpenCV's per-pixel "largest channel gradient" can tie between channels;
    # the channel order then flips a handful of pixels (6 of 65536 on this crop), no more.
    photo = np.ascontiguousarray(data.astronaut()[None, :256, :256])
    assert (canny(photo) != canny(np.ascontiguousarray(photo[..., ::-1]))).mean() < 1e-3


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="images: expected uint8"):
        build_projector("canny")(np.zeros((2, 8, 8, 3), np.float32))

"""The embedded demo dataset: deterministic synthetic shapes with labels, masks, depth, segmentation.

Each class is one (shape, texture) pair, so classes differ in both geometry and texture;
colour, size, position, rotation and background vary per image. Every image comes with
its class label, a foreground mask, a depth map (tilted background plane, object in front
of it with a shape-dependent relief) and a segmentation map (0 = background, k+1 = class k).
Shapes are rendered at ``supersample`` times the target size and box-filtered down, so
edges are anti-aliased like natural images rather than binary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Shapes are signed "inside" tests on coordinates (u, v) in the object's frame, radius ~1.
SHAPES = ("disk", "square", "triangle", "ring", "cross", "star", "diamond", "hexagon", "ellipse", "heart")
TEXTURES = ("solid", "hstripes", "checker", "solid", "dots", "radial", "dstripes", "vstripes", "checker", "dots")
NUM_CLASSES = len(SHAPES)


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and randomness of one split."""

    num_images: int
    resolution: int = 32
    seed: int = 0
    supersample: int = 4


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of points inside the unit-size shape, coordinates in the object frame."""
    r = np.hypot(u, v)
    if shape == "disk":
        return r <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        return (v >= -0.7) & (v <= 0.9 - 1.8 * np.abs(u))
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if shape == "star":
        theta = np.arctan2(v, u)
        return r <= 0.55 + 0.45 * np.cos(5 * theta) ** 2
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "hexagon":
        au, av = np.abs(u), np.abs(v)
        return (av <= 0.866) & (0.866 * au + 0.5 * av <= 0.866)
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    if shape == "heart":
        x, y = u * 1.1, v * 1.1 + 0.2
        return (x**2 + y**2 - 0.6) ** 3 - x**2 * y**3 <= 0.0
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    """Texture modulation in [0, 1] (1 = primary colour, 0 = secondary colour)."""
    if texture == "solid":
        return np.ones_like(u)
    if texture == "hstripes":
        return (np.sin(v * freq * np.pi) > 0).astype(np.float64)
    if texture == "vstripes":
        return (np.sin(u * freq * np.pi) > 0).astype(np.float64)
    if texture == "dstripes":
        return (np.sin((u + v) * freq * np.pi) > 0).astype(np.float64)
    if texture == "checker":
        return ((np.sin(u * freq * np.pi) > 0) ^ (np.sin(v * freq * np.pi) > 0)).astype(np.float64)
    if texture == "dots":
        return ((np.cos(u * freq * np.pi) * np.cos(v * freq * np.pi)) < 0.4).astype(np.float64)
    if texture == "radial":
        return 0.5 + 0.5 * np.cos(np.hypot(u, v) * freq * np.pi)
    raise ValueError(f"unknown texture {texture!r}")


def _box_down(a: np.ndarray, f: int) -> np.ndarray:
    """Average-pool the last two axes by an integer factor f."""
    h, w = a.shape[-2] // f, a.shape[-1] // f
    return a.reshape(*a.shape[:-2], h, f, w, f).mean(axis=(-3, -1))


def render_image(label: int, rng: np.random.Generator, resolution: int, supersample: int) -> dict[str, np.ndarray]:
    """Render one image of class ``label``; return image (H,W,3 uint8), mask, depth, seg."""
    n = resolution * supersample
    coords = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # pixel centres in [-1, 1]
    yy, xx = np.meshgrid(coords, coords, indexing="ij")

    size = rng.uniform(0.45, 0.75)
    cx, cy = rng.uniform(-0.95 + size, 0.95 - size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    ca, sa = np.cos(angle), np.sin(angle)
    u = (ca * (xx - cx) + sa * (yy - cy)) / size
    v = (-sa * (xx - cx) + ca * (yy - cy)) / size

    inside = _inside(SHAPES[label], u, v).astype(np.float64)
    tex = _texture(TEXTURES[label], u, v, freq=rng.uniform(2.5, 4.0))

    # Background: a smooth two-colour gradient plus mild noise, so it is never flat.
    bg_a, bg_b = rng.uniform(0.0, 1.0, size=(2, 3))
    g_angle = rng.uniform(0, 2 * np.pi)
    ramp = 0.5 + 0.5 * (np.cos(g_angle) * xx + np.sin(g_angle) * yy) / np.sqrt(2)
    background = bg_a * (1 - ramp[..., None]) + bg_b * ramp[..., None]
    background += rng.normal(0, 0.03, size=(resolution, resolution, 3)).repeat(supersample, 0).repeat(supersample, 1)

    # Foreground colours: a random hue pair, contrasted against the background mean.
    primary = rng.uniform(0.0, 1.0, size=3)
    if np.abs(primary - background.mean(axis=(0, 1))).sum() < 0.6:
        primary = 1.0 - primary
    secondary = primary * rng.uniform(0.2, 0.6)
    shade = 0.85 + 0.15 * np.clip(1 - np.hypot(u, v) / 1.5, 0, 1)  # soft lighting
    foreground = (secondary + (primary - secondary) * tex[..., None]) * shade[..., None]

    img = inside[..., None] * foreground + (1 - inside[..., None]) * background
    img = np.clip(_box_down(np.moveaxis(img, -1, 0), supersample), 0.0, 1.0)

    # Depth: background plane tilted top-to-bottom (far at top), object in front with a dome relief.
    depth_bg = 0.6 + 0.35 * (1 - (yy + 1) / 2)
    dome = np.clip(1 - np.hypot(u, v) ** 2, 0, 1)
    depth_fg = 0.25 - 0.1 * dome + 0.05 * rng.uniform()
    depth = inside * depth_fg + (1 - inside) * depth_bg

    cover = _box_down(inside, supersample)
    mask = cover >= 0.5
    return {
        "image": np.round(np.moveaxis(img, 0, -1) * 255).astype(np.uint8),
        "mask": mask.astype(np.uint8),
        "depth": _box_down(depth, supersample).astype(np.float16),
        "seg": (mask * (label + 1)).astype(np.uint8),
    }


def generate(spec: SyntheticSpec, start: int = 0, count: int | None = None) -> dict[str, np.ndarray]:
    """Generate images ``start .. start+count`` of a split; each image has its own derived seed.

    Labels cycle through the classes in a seeded permutation, so every class has
    ``num_images / NUM_CLASSES`` images (±1). Any sub-range is reproducible on its own,
    which is what lets shards be generated independently.
    """
    count = spec.num_images - start if count is None else count
    order = np.random.default_rng([spec.seed, 1]).permutation(spec.num_images)
    labels = order % NUM_CLASSES
    out: dict[str, list[np.ndarray]] = {"image": [], "mask": [], "depth": [], "seg": []}
    for i in range(start, start + count):
        rng = np.random.default_rng([spec.seed, 2, i])
        sample = render_image(int(labels[i]), rng, spec.resolution, spec.supersample)
        for key, value in sample.items():
            out[key].append(value)
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["label"] = labels[start : start + count].astype(np.int64)
    return arrays

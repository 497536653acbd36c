"""Condition projectors of the Seesaw study, behind one registry (spec metrics-ifid-seesaw §7).

A projector P maps uint8 RGB images ``(N, H, W, 3)`` to the condition the drift compares
(Seesaw Def. 5.1: Delta_P = E_x d(P(x), P(D(E(x))))). Four kinds, by what they return:

- ``map``: a normalised condition map per image, float32 ``(N, H, W)`` in [0, 1] (Canny, depth);
- ``labels``: a class map per image, int ``(N, H, W)``, plus the ``palette`` (K, 3) uint8 that
  renders it as the colour map the paper compares (segmentation);
- ``face``: the largest detected face (or object) of each image, :class:`Face` or None;
- ``embedding``: one vector per image, float32 ``(N, D)`` (CLIP, DINOv2 and their stand-ins).

Every projector is registered under the name that is recorded with each number it produced
(``canny``, ``midas-dpt-hybrid``, ``demo-dense-depth`` ...). A condition of the study is served
by one projector of the matching *role*; :data:`DEFAULT_PROJECTORS` names the paper's choice per
role and :func:`resolve_projectors` builds a role -> projector dict, or says per role why it
cannot run ("not run: needs <file> from <source>", never a faked number).

Factories take ``weights`` (a weight file, a weights directory, or None = weights directory
unknown: look in the Hugging Face / torch.hub caches), ``device`` and, for networks,
``random_init`` (the exact architecture with random weights: tests and benchmarks only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CONDITION_ROLES",
    "DEFAULT_PROJECTORS",
    "FACE_BACKENDS",
    "EmbeddingProjector",
    "Face",
    "FaceProjector",
    "LabelProjector",
    "MapProjector",
    "assign_state",
    "available_projectors",
    "build_projector",
    "check_images",
    "largest_face",
    "manifest_weight",
    "projector_role",
    "register_projector",
    "resolve_projectors",
]

# The role each condition of the study needs (spec §7.2-7.4). "spatial" needs the three map roles.
CONDITION_ROLES: dict[str, tuple[str, ...]] = {
    "canny": ("canny",),
    "depth": ("depth",),
    "seg": ("seg",),
    "spatial": ("canny", "depth", "seg"),
    "identity": ("face",),
    "face_at_r": ("face",),
    "clip": ("clip",),
    "dinov2": ("dinov2",),
}

# The paper-faithful projector per role (seesaw-notes §3; the face role's offline
# alternative is "dlib-face").
DEFAULT_PROJECTORS: dict[str, str] = {
    "canny": "canny",
    "depth": "midas-dpt-hybrid",
    "seg": "uniformer-s-ade20k",
    "face": "insightface-buffalo-s",
    "clip": "clip-vit-b32",
    "dinov2": "dinov2-vitb14",
}

# Config key ``face_backend`` -> the face projector it names (seesaw-notes §3: dlib is the
# offline backend, labelled as such; InsightFace buffalo_s is the paper's).
FACE_BACKENDS: dict[str, str] = {"insightface": "insightface-buffalo-s", "dlib": "dlib-face"}


@dataclass(frozen=True)
class Face:
    """One detection: box (x1, y1, x2, y2) in pixels, L2-normalised embedding, detector score."""

    bbox: tuple[float, float, float, float]
    embedding: np.ndarray
    score: float = 1.0

    @property
    def area(self) -> float:
        """(x2 - x1)(y2 - y1), the size the largest-face rule compares (spec §7.3)."""
        x1, y1, x2, y2 = self.bbox
        return float((x2 - x1) * (y2 - y1))


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box area (first of equal areas), None if there is none.

    Spec §7.3: keep the largest face by bbox area (x2-x1)(y2-y1), independent of detection order.
    """
    return max(faces, key=lambda f: f.area, default=None)


class MapProjector(Protocol):
    name: str
    role: str
    kind: str  # "map"

    def __call__(self, images: np.ndarray) -> np.ndarray:  # uint8 (N,H,W,3) -> float32 (N,H,W) in [0,1]
        ...


class LabelProjector(Protocol):
    name: str
    role: str
    kind: str  # "labels"
    palette: np.ndarray  # (K, 3) uint8 RGB colour of each class

    def labels(self, images: np.ndarray) -> np.ndarray:  # uint8 (N,H,W,3) -> int64 (N,H,W)
        ...


class FaceProjector(Protocol):
    name: str
    role: str
    kind: str  # "face"

    def largest_faces(self, images: np.ndarray) -> list[Face | None]:
        ...


class EmbeddingProjector(Protocol):
    name: str
    role: str
    kind: str  # "embedding"
    dim: int

    def __call__(self, images: np.ndarray) -> np.ndarray:  # uint8 (N,H,W,3) -> float32 (N, D)
        ...


@dataclass(frozen=True)
class _Entry:
    role: str
    factory: Callable[..., Any]


_REGISTRY: dict[str, _Entry] = {}


def register_projector(name: str, role: str) -> Callable:
    """Class/function decorator adding a projector factory for ``role`` to the registry."""
    if role not in DEFAULT_PROJECTORS:
        raise ValueError(f"role: expected one of {sorted(DEFAULT_PROJECTORS)}, got {role!r}")

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"projector {name!r} registered twice")
        _REGISTRY[name] = _Entry(role, factory)
        return factory

    return wrap


def available_projectors(role: str | None = None) -> list[str]:
    """Names of the registered projectors (of one role, if given)."""
    _import_builtin()
    return sorted(n for n, e in _REGISTRY.items() if role is None or e.role == role)


def projector_role(name: str) -> str:
    """The role a registered projector serves."""
    _import_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown projector {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].role


def build_projector(name: str, **kwargs: Any) -> Any:
    """Build a registered projector; unknown names raise with the list of known ones.

    Missing weights raise :class:`latentbench.weights.WeightMissing` ("not run: needs ...").
    """
    role = projector_role(name)
    projector = _REGISTRY[name].factory(**kwargs)
    projector.name, projector.role = name, role
    return projector


def resolve_projectors(
    conditions: list[str],
    names: dict[str, str] | None = None,
    options: dict[str, dict] | None = None,
    weights_dir: str | Path | None = None,
    device: str = "cpu",
) -> tuple[dict[str, Any], dict[str, str]]:
    """Build the projectors the ``conditions`` need: (role -> projector, role -> "not run: ...").

    ``names`` overrides :data:`DEFAULT_PROJECTORS` per role (e.g. ``{"face": "dlib-face"}`` or the
    demo's stand-ins); ``options`` gives extra factory keyword arguments per role (a demo net's
    weight file: ``{"depth": {"weights": "results/demo_dense.pt"}}``). A projector whose weights
    are missing is reported in the second dict instead of raising.
    """
    from latentbench.weights import WeightMissing

    unknown = [c for c in conditions if c not in CONDITION_ROLES]
    if unknown:
        raise ValueError(f"conditions: unknown {unknown}; known: {', '.join(CONDITION_ROLES)}")
    names, options = dict(names or {}), dict(options or {})
    bad = sorted(set(names) - set(DEFAULT_PROJECTORS))
    if bad:
        raise ValueError(f"projectors: unknown role(s) {bad}; known: {', '.join(DEFAULT_PROJECTORS)}")
    roles = list(dict.fromkeys(r for c in conditions for r in CONDITION_ROLES[c]))
    built: dict[str, Any] = {}
    not_run: dict[str, str] = {}
    for role in roles:
        name = names.get(role, DEFAULT_PROJECTORS[role])
        if projector_role(name) != role:
            raise ValueError(f"projectors.{role}: {name!r} is a {projector_role(name)} projector")
        kwargs = {"weights": weights_dir, "device": device, **options.get(role, {})}
        try:
            built[role] = build_projector(name, **kwargs)
        except WeightMissing as err:
            not_run[role] = str(err)
    return built, not_run


def manifest_weight(entry_name: str, weights: str | Path | None) -> Path:
    """The file of weights-manifest entry ``entry_name``: ``weights`` itself when it is a file,
    else where :func:`latentbench.weights_fetch.locate` finds it (``weights`` as the weights
    directory, then the caches). Missing -> WeightMissing ("not run: needs <file> ... <source>")."""
    from latentbench.weights import WeightMissing
    from latentbench.weights_fetch import load_manifest, locate

    if weights is not None and Path(weights).expanduser().is_file():
        return Path(weights).expanduser()
    entry = load_manifest()[entry_name]
    found = locate(entry, weights)
    if found is None:
        raise WeightMissing(entry.name, entry.file, entry.source, [weights] if weights is not None else [])
    return found


def assign_state(model: Any, state: dict, source: str | Path = "checkpoint") -> None:
    """Load ``state`` strictly into a model built on the meta device (``assign=True``: the
    file's tensors become the parameters, nothing is initialised twice). Any tensor left on
    meta (a buffer the file lacks) raises naming it."""
    model.load_state_dict(state, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"{source}: no values for {left[:5]}{' ...' if len(left) > 5 else ''}")


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """``images`` as a C-contiguous uint8 (N, H, W, 3) array; anything else raises naming ``name``."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 RGB (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def _import_builtin() -> None:
    from latentbench.drift.projectors import (
        canny,  # noqa: F401  (registers "canny")
        clip,  # noqa: F401  (registers "clip-vit-b32")
        demo,  # noqa: F401  (registers the demo stand-ins)
        dinov2,  # noqa: F401  (registers "dinov2-vitb14")
        dlib_face,  # noqa: F401  (registers "dlib-face")
        insightface_face,  # noqa: F401  (registers "insightface-buffalo-s")
        midas,  # noqa: F401  (registers "midas-dpt-hybrid")
        uniformer,  # noqa: F401  (registers "uniformer-s-ade20k")
    )

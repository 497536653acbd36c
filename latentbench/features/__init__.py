"""Feature networks for FID-type metrics, behind one registry.

A feature extractor maps images (float NCHW in [0, 1]) to feature vectors [N, D]. Each is
registered under a name that is recorded with every number it produced (e.g. the demo's
``demo-cnn`` versus ``inception-v3-compat``), so a report can say which space an FID lives in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # torch stays unimported until a network is built (the spec tables are torch-free)
    import torch


class FeatureExtractor(Protocol):
    """What every registered feature network provides."""

    name: str
    dim: int
    num_classes: int  # width of the classifier logits used by the Inception Score

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # [N,3,H,W] in [0,1] -> [N, D]
        ...

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [N, D] and classifier logits [N, num_classes] from one forward pass."""
        ...


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {}


def register_feature_extractor(name: str) -> Callable:
    """Class/function decorator adding a feature-extractor factory to the registry."""

    def wrap(factory: Callable[..., FeatureExtractor]) -> Callable[..., FeatureExtractor]:
        if name in _REGISTRY:
            raise ValueError(f"feature extractor {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_feature_extractors() -> list[str]:
    """Names of all registered feature networks."""
    _import_builtin()
    return sorted(_REGISTRY)


def build_feature_extractor(name: str, **kwargs) -> FeatureExtractor:
    """Build a registered feature network; unknown names raise with the list of known ones."""
    _import_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown feature network {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def load_feature_extractor(settings: dict, weights: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The study's FID feature network from its config section (``feature_net``: name, options).

    ``weights`` is the network's weight file: the DAG-trained demo net, or an external file
    such as Inception's (resolved by the workflow from ``weights_dir``).
    """
    return build_feature_extractor(settings["name"], weights=weights, device=device, **settings.get("options", {}))


def _import_builtin() -> None:
    from latentbench.features import demo_net  # noqa: F401  (registers "demo-cnn")
    from latentbench.features import inception  # noqa: F401  (registers "inception-v3-compat")
    from latentbench.features import representations  # noqa: F401  (registers the "fdr-*" spaces)

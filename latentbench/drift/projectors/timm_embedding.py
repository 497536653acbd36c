"""One image embedding from a timm model, with a CLIP-style preprocessing (shared by clip.py and dinov2.py).

Preprocessing as OpenAI CLIP's ``_transform`` (and torchvision's ``Resize(int)`` +
``CenterCrop``): PIL bicubic resize of the short side to ``resize``, centre crop ``crop``
(top-left offset ``round((side - crop) / 2)``), [0, 1], the model's mean/std. No timm
``crop_pct``: the resize size is given, not derived from a crop fraction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from latentbench.drift.projectors import assign_state, check_images, manifest_weight


@dataclass(frozen=True)
class EmbeddingSpec:
    """timm architecture + the preprocessing and pooling of one embedding projector."""

    model: str
    create_kwargs: tuple[tuple[str, object], ...]
    manifest_entry: str
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pooling: str  # "head": model(x) (CLIP's projected embedding); "cls": normed class token
    adapt_state: Callable[[dict, object], dict] | None = None  # (file's state dict, model) -> state dict


def resize_centre_crop(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """uint8 (H, W, 3) -> short side ``resize`` (PIL bicubic), centre crop ``crop`` -> uint8 (crop, crop, 3)."""
    from PIL import Image

    h, w = image.shape[:2]
    if (min(h, w)) != resize:
        nh, nw = (resize, int(resize * w / h)) if h <= w else (int(resize * h / w), resize)
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BICUBIC))
        h, w = nh, nw
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)
    if top < 0 or left < 0:
        raise ValueError(f"images: {h}x{w} after resizing is smaller than the {crop} crop")
    return image[top : top + crop, left : left + crop]


class TimmEmbeddingProjector:
    """uint8 RGB (N, H, W, 3) -> float32 embeddings (N, D) of a timm model."""

    kind = "embedding"

    def __init__(self, spec: EmbeddingSpec, weights=None, device="cpu", random_init: bool = False, batch_size: int = 64) -> None:
        import timm

        self.spec = spec
        self.device = torch.device(device)
        self.batch_size = batch_size
        path = None if random_init else manifest_weight(spec.manifest_entry, weights)
        if path is None:
            self.model = timm.create_model(spec.model, pretrained=False, **dict(spec.create_kwargs))
        else:
            from safetensors.torch import load_file

            with torch.device("meta"):
                self.model = timm.create_model(spec.model, pretrained=False, **dict(spec.create_kwargs))
            state = load_file(str(path))
            if spec.adapt_state is not None:
                state = spec.adapt_state(state, self.model)
            assign_state(self.model, state, path)
        self.model.to(self.device).eval().requires_grad_(False)
        self.mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)
        self.dim = int(self.model.num_classes if spec.pooling == "head" else self.model.num_features)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images -> the normalised float tensor (N, 3, crop, crop) the model sees."""
        arr = np.stack([resize_centre_crop(img, self.spec.resize, self.spec.crop) for img in check_images(images)])
        x = torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            x = self.preprocess(images[i : i + self.batch_size])
            if self.spec.pooling == "head":
                emb = self.model(x)
            else:
                emb = self.model.forward_features(x)[:, 0]
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out)

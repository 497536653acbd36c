"""Image datasets in the ImageFolder layout (ImageNet: ``<root>/<split>/<class>/<image>``).

Images are read once by the dataset job, centre-cropped the ADM way and written as the
suite's verified uint8 shards (latentbench.data.shards), so every later job streams the same
pixels. Classes are the sorted sub-folder names of the train split (torchvision ImageFolder's
rule), labels their index; images within a class are taken in sorted file-name order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "center_crop_arr", "list_classes", "list_images", "load_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM centre crop to ``size`` x ``size``, uint8 HWC RGB.

    guided-diffusion ``improved_diffusion/image_datasets.py`` ``center_crop_arr`` (also
    LightningDiT's ``img_transform``; spec metrics-diffusability §1.2): halve with a BOX filter
    while the short side is at least 2 x size, BICUBIC-resize so the short side is ``size``
    (long side rounded), then crop the centre (offsets floor((side - size) / 2)).
    """
    if size < 1:
        raise ValueError(f"size: must be positive, got {size}")
    image = image.convert("RGB")
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top : top + size, left : left + size])


def list_classes(split_dir: str | Path) -> list[str]:
    """Sorted class folder names of a split; a missing or empty folder raises naming it."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: image folder not found (config data.root / data.<split>_dir)")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{split_dir}: no class sub-folders (expected the ImageFolder layout <split>/<class>/<image>)")
    return classes


def list_images(split_dir: str | Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(path, label) of every image of a split, class by class, file names sorted.

    A class folder of the split that is not in ``classes`` (those of the train split) raises.
    """
    split_dir = Path(split_dir)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(list_classes(split_dir)) - set(index))
    if unknown:
        raise ValueError(f"{split_dir}: class folders not in the train split: {', '.join(unknown[:5])}")
    items = []
    for cls in sorted(index):
        folder = split_dir / cls
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            items += [(p, index[cls]) for p in files]
    return items


def _load(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return center_crop_arr(image, size)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc})") from None


def load_images(items: list[tuple[Path, int]], size: int, workers: int = 1) -> dict[str, np.ndarray]:
    """Decode and crop ``items`` -> {"image": uint8 [N, size, size, 3], "label": int64 [N]}."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decoding releases the GIL
        images = list(pool.map(lambda item: _load(item[0], size), items))
    return {
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "label": np.asarray([label for _, label in items], dtype=np.int64),
    }

"""Image preprocessing that follows the model folder's preprocessor_config.json (CLIPImageProcessor semantics)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.images import upright

# Bump when anything here changes the pixels a model sees: stored vectors record it.
PREPROCESS_VERSION = 1
# Shrinking a 12-MP photo to 224 px with an exact bicubic filter costs ~90 ms here; Pillow's reducing_gap
# first box-reduces by an integer factor, keeping at least this many source pixels per output pixel for the
# bicubic pass (~25 ms). Only images this many times larger than the target take that route.
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None  # exact (height, width) squash resize, as the current v1.5 config says
    shortest_edge: int | None  # or keep aspect: resize the short side, then centre-crop
    crop: tuple[int, int] | None
    resample: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_folder(cls, folder: Path) -> "Preprocess":
        cfg = json.loads((folder / "preprocessor_config.json").read_text())
        size = cfg.get("size", {})
        crop = cfg.get("crop_size", {}) if cfg.get("do_center_crop", True) else {}
        as_pair = lambda d: (int(d["height"]), int(d["width"])) if "height" in d else None  # noqa: E731
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        return cls(
            size=as_pair(size),
            shortest_edge=size.get("shortest_edge"),
            crop=as_pair(crop) if crop else None,
            resample=int(cfg.get("resample", 3)),
            mean=tuple(cfg.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(cfg.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
        )

    @property
    def input_size(self) -> tuple[int, int]:
        return self.crop or self.size or (self.shortest_edge, self.shortest_edge)

    def resize(self, image: Image.Image) -> Image.Image:
        """RGB image at the model's input size (uint8, before normalization)."""
        image = to_rgb(image)
        if self.size:
            image = _resize(image, (self.size[1], self.size[0]), self.resample)
        elif self.shortest_edge:
            w, h = image.size
            scale = self.shortest_edge / min(w, h)
            image = _resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), self.resample)
        if self.crop and image.size != (self.crop[1], self.crop[0]):
            image = _center_crop(image, self.crop)
        return image

    def to_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        """Already-resized RGB images -> normalized float32 [B, 3, H, W]."""
        batch = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return batch.sub_(mean).div_(std)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return self.to_tensor([self.resize(im) for im in images])


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied, then converted the way CLIPImageProcessor does."""
    image = upright(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping at 255
        image = Image.fromarray((np.asarray(image, dtype=np.float32) / 257.0).clip(0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def _resize(image: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    shrink = min(image.width / size[0], image.height / size[1])
    return image.resize(size, resample=resample, reducing_gap=REDUCING_GAP if shrink >= REDUCING_GAP else None)


def _center_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    w, h = image.size
    ch, cw = crop
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))

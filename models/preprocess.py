"""Image preprocessing that follows the model folder's preprocessor_config.json (CLIPImageProcessor semantics)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.images import upright

if TYPE_CHECKING:
    import torch

# Bump when anything here changes the pixels a model sees: stored vectors record it.
PREPROCESS_VERSION = 1
# Shrinking a 12-MP photo to 224 px with an exact bicubic filter costs ~90 ms here; Pillow's reducing_gap
# first box-reduces by an integer factor, keeping at least this many source pixels per output pixel for the
# bicubic pass (~25 ms). Only images this many times larger than the target take that route.
REDUCING_GAP = 3.0
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
OPEN_CLIP_RESIZE_MODES = ("shortest", "squash", "longest")
# open_clip maps anything but 'bilinear' to bicubic at eval ('random' is a training option)
OPEN_CLIP_INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "random": Image.BICUBIC}


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None  # exact (height, width) squash resize, as the current v1.5 config says
    shortest_edge: int | None  # or keep aspect: resize the short side, then centre-crop
    crop: tuple[int, int] | None
    resample: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # open_clip's eval transform instead of the fields above: 'shortest' (short side + centre crop), 'squash' or
    # 'longest' (fit inside, pad with `fill`), to `size`, with torchvision's rounding (see _open_clip_resize)
    resize_mode: str | None = None
    fill: int = 0

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
            mean=tuple(cfg.get("image_mean", OPENAI_MEAN)),
            std=tuple(cfg.get("image_std", OPENAI_STD)),
        )

    @classmethod
    def from_open_clip(cls, cfg: dict) -> "Preprocess":
        """From an open_clip_config.json `preprocess_cfg` (missing keys: open_clip's PreprocessCfg defaults)."""
        size = cfg.get("size", 224)
        size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        mode = cfg.get("resize_mode") or "shortest"
        interpolation = cfg.get("interpolation") or "bicubic"
        if mode not in OPEN_CLIP_RESIZE_MODES or interpolation not in OPEN_CLIP_INTERPOLATIONS:
            raise ValueError(f"unsupported open_clip preprocessing: resize_mode {mode!r}, interpolation {interpolation!r}")
        fill = cfg.get("fill_color") or 0
        return cls(size=size, shortest_edge=None, crop=None, resample=OPEN_CLIP_INTERPOLATIONS[interpolation],
                   mean=_triple(cfg.get("mean", OPENAI_MEAN)), std=_triple(cfg.get("std", OPENAI_STD)),
                   resize_mode=mode, fill=int(fill))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.crop or self.size or (self.shortest_edge, self.shortest_edge)

    def resize(self, image: Image.Image) -> Image.Image:
        """RGB image at the model's input size (uint8, before normalization)."""
        if self.resize_mode and resizes_with_alpha(image):
            # open_clip resizes first and drops alpha after: Pillow's RGBA resampling ignores transparent
            # pixels (premultiplied), so their stored colour never bleeds into the picture.
            return _open_clip_resize(upright(image).convert("RGBA"), self).convert("RGB")
        image = to_rgb(image)
        if self.resize_mode:
            return _open_clip_resize(image, self)
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
        import torch  # here, not above: the indexer decodes with this module, and an unchanged re-run needs no torch

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


def resizes_with_alpha(image: Image.Image) -> bool:
    """An alpha channel that Pillow's resampling honours (a palette's transparent index is only a colour)."""
    return image.mode in ("RGBA", "LA")


def _resize(image: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    shrink = min(image.width / size[0], image.height / size[1])
    return image.resize(size, resample=resample, reducing_gap=REDUCING_GAP if shrink >= REDUCING_GAP else None)


def _center_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    w, h = image.size
    ch, cw = crop
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def _triple(value) -> tuple[float, float, float]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3


def _open_clip_resize(image: Image.Image, pre: Preprocess) -> Image.Image:
    """open_clip's image_transform(is_train=False) up to ToTensor, on an RGB or RGBA image.

    Sizes are computed the way torchvision and open_clip do (truncation for a square 'shortest' target, rounding
    elsewhere; a crop offset rounds half to even), so below REDUCING_GAP the pixels are identical to theirs.
    """
    th, tw = pre.size
    w, h = image.size
    if pre.resize_mode == "squash":
        return _resize(image, (tw, th), pre.resample)
    if pre.resize_mode == "shortest" and th == tw:  # torchvision Resize(int): short side exact, long truncated
        short, long = min(w, h), max(w, h)
        new_short, new_long = th, int(th * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        resample = pre.resample
    else:  # open_clip's ResizeKeepRatio: scale by the min (shortest) or max (longest) ratio, sides rounded
        ratio = max(h / th, w / tw) if pre.resize_mode == "longest" else min(h / th, w / tw)
        size = (round(w / ratio), round(h / ratio))
        # open_clip builds the non-square 'shortest' resize without its interpolation setting: always bicubic
        resample = pre.resample if pre.resize_mode == "longest" else Image.BICUBIC
    if size != (w, h):
        image = _resize(image, size, resample)
    return _center_crop_or_pad(image, (th, tw), pre.fill if pre.resize_mode == "longest" else 0)


def _center_crop_or_pad(image: Image.Image, crop: tuple[int, int], fill: int) -> Image.Image:
    """open_clip's center_crop_or_pad (torchvision's CenterCrop is the same with fill 0)."""
    ch, cw = crop
    w, h = image.size
    if cw > w or ch > h:
        left, top = max(cw - w, 0) // 2, max(ch - h, 0) // 2
        padded = Image.new(image.mode, (max(w, cw), max(h, ch)), (fill,) * len(image.getbands()))
        padded.paste(image, (left, top))
        image, (w, h) = padded, padded.size
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return image if (w, h) == (cw, ch) else image.crop((left, top, left + cw, top + ch))

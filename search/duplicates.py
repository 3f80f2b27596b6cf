"""Near-duplicates: the shots of one burst, and re-encodes, crops and small exposure changes of one photo. A result
list shows each group as one tile with a count; `glance duplicates` lists the groups across the library, for
cleaning it up. Nothing is ever deleted.

Two photos are near-duplicates when, where both have a taken-at date, they were taken within BURST_SECONDS of
each other (a re-encode keeps its EXIF date; two visits to the same view a year apart are two photos), and either
  * their vectors' cosine is at least the vision model's threshold, or
  * their layouts' cosine is at least the layout threshold: the layout is the stored thumbnail as 16 x 16 grey
    levels less their mean, which an exposure change, a re-encode or a resize hardly move, whatever the model.

Both thresholds are measured on the index's vision model, once per weights file, and kept with the precision
probe's outcome (models/precision_cache.py): SCENES generated scenes (shapes on a graded background, with
texture), each saved as a burst of VARIANTS (JPEG re-encodes, crops, exposure, half size). Pairs within a burst
should pass, pairs of distinct scenes should not. Each threshold is set halfway between the two where they
separate, else just above every distinct pair (collapsing a distinct photo would hide it); the precision and
recall of the rule on those pairs come with them.

    threshold_for(vision)                          -> Threshold(cosine, layout, precision, recall, ...)
    layout(thumbnail JPEG bytes)                   -> [256] unit vector
    near_pairs(vectors, layouts, dates, threshold) -> {i: [(j, cosine), ...]}  (symmetric)
    cluster(order, pairs)                    -> groups of indexes, each led by its first in `order`
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from core.images import thumbnail  # the layout is read from the thumbnail the indexer stores

BURST_SECONDS = 300
SCENES = 10
SCENE_SIZE = (640, 480)
BLOCK_ROWS = 1024  # library-wide pairs: rows of the cosine matrices at a time (1024 x 100k floats = 400 MB)
MEASURED_VERSION = 1  # change when the generated bursts change: measured thresholds are then measured again


LAYOUT_SIDE = 16


@dataclass(frozen=True)
class Threshold:
    cosine: float  # the vectors'
    layout: float  # the layouts'
    precision: float  # of the generated pairs the rule joins, the share that are one scene
    recall: float  # of the generated one-scene pairs, the share the rule joins
    burst_min: float  # the lowest vector cosine within a burst
    distinct_max: float  # the highest vector cosine between distinct scenes


def layout(thumb: bytes) -> np.ndarray:
    """A thumbnail's grey levels at LAYOUT_SIDE x LAYOUT_SIDE, less their mean, as a unit vector."""
    with Image.open(io.BytesIO(thumb), formats=["JPEG", "PNG", "WEBP"]) as image:
        grey = image.convert("L").resize((LAYOUT_SIDE, LAYOUT_SIDE), Image.Resampling.BOX)
    levels = np.asarray(grey, np.float32).ravel()
    levels -= levels.mean()
    return levels / max(float(np.linalg.norm(levels)), 1e-6)


# ------------------------------------------------------------------------------------------ measuring it

def scene(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = SCENE_SIZE
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    fade = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    pixels = top * (1 - fade) + bottom * fade + rng.normal(0, 10, (h, w, 3))
    image = Image.fromarray(np.broadcast_to(np.clip(pixels, 0, 255), (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 80))
        box = [x0, y0, x0 + int(rng.integers(60, w // 2)), y0 + int(rng.integers(60, h // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue()), formats=["JPEG"]).convert("RGB")


def _crop(image: Image.Image, share: float, shift: float) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * share), int(h * share)
    x, y = int((w - cw) * shift), int((h - ch) * shift)
    return image.crop((x, y, x + cw, y + ch))


VARIANTS = {
    "jpeg q70": lambda im: _jpeg(im, 70),
    "jpeg q30": lambda im: _jpeg(im, 30),
    "crop 90%": lambda im: _crop(im, 0.9, 0.5),
    "crop 80%, off centre": lambda im: _crop(im, 0.8, 0.2),
    "12% brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.12),
    "12% darker": lambda im: ImageEnhance.Brightness(im).enhance(0.88),
    "half size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC),
}


def burst(image: Image.Image) -> list[Image.Image]:
    """The photo and its variants: what a burst, an export or an edit leaves in a library."""
    return [image, *(make(image) for make in VARIANTS.values())]


def measure(embed_images, scenes: int = SCENES) -> Threshold:
    """The thresholds for a model whose `embed_images(list of PIL images)` gives unit vectors [N, dim]."""
    images, labels = [], []
    for number in range(scenes):
        shots = burst(scene(1000 + number))
        images += shots
        labels += [number] * len(shots)
    upper = np.triu_indices(len(labels), 1)
    same = (np.asarray(labels)[:, None] == np.asarray(labels)[None, :])[upper]
    vectors = np.asarray(embed_images(images), np.float32)
    layouts = np.stack([layout(thumbnail(image)) for image in images])
    by_vector, by_layout = (vectors @ vectors.T)[upper], (layouts @ layouts.T)[upper]
    cosine, layout_cosine = _separating(by_vector, same), _separating(by_layout, same)
    joined = (by_vector >= cosine) | (by_layout >= layout_cosine)
    precision = float(same[joined].mean()) if joined.any() else 1.0
    return Threshold(cosine, layout_cosine, precision, float(joined[same].mean()), float(by_vector[same].min()),
                     float(by_vector[~same].max()))


def _separating(scores: np.ndarray, same: np.ndarray) -> float:
    """Halfway between the pairs of one scene and of distinct ones where they separate, else just above the
    highest distinct pair."""
    lowest_same, highest_distinct = float(scores[same].min()), float(scores[~same].max())
    if lowest_same > highest_distinct:
        return round((lowest_same + highest_distinct) / 2, 6)
    return round(highest_distinct + 1e-6, 6)


def threshold_for(vision) -> Threshold:
    """The vision encoder's threshold, measured once per weights file, torch and CPU (models/precision_cache.py)."""
    from models.precision_cache import cached_value, machine_key, weights_key

    weights = next(path for name in ("model.safetensors", "open_clip_model.safetensors",
                                     "open_clip_pytorch_model.safetensors")
                   if (path := vision.folder / name).exists())
    key = {"duplicates": MEASURED_VERSION, **weights_key(weights), **machine_key(), "spec": str(vision.spec)}
    found = cached_value(key, lambda: asdict(measure(lambda images: vision.embed_images(images).numpy())))
    return Threshold(**found)


# ------------------------------------------------------------------------------------------ using it

def near_pairs(vectors: np.ndarray, layouts: np.ndarray, dates: list[datetime | None],
               threshold: Threshold) -> dict[int, list[tuple[int, float]]]:
    """Every near-duplicate pair (the module docstring's rule): {i: [(j, vector cosine)]}, both ways."""
    vectors, layouts = np.asarray(vectors, np.float32), np.asarray(layouts, np.float32)
    pairs: dict[int, list[tuple[int, float]]] = {}
    for start in range(0, len(vectors), BLOCK_ROWS):
        block = vectors[start:start + BLOCK_ROWS] @ vectors.T  # [rows, N]
        joined = (block >= threshold.cosine) | (layouts[start:start + BLOCK_ROWS] @ layouts.T >= threshold.layout)
        rows, cols = np.nonzero(joined)
        for i, j in zip((rows + start).tolist(), cols.tolist()):
            if i != j and close_in_time(dates[i], dates[j]):
                pairs.setdefault(i, []).append((j, float(block[i - start, j])))
    return pairs


def close_in_time(a: datetime | None, b: datetime | None) -> bool:
    return a is None or b is None or abs((a - b).total_seconds()) <= BURST_SECONDS


def cluster(order: list[int], pairs: dict[int, list[tuple[int, float]]]) -> list[list[int]]:
    """Groups in `order`: each index joins the group of the earlier leader it is nearest to among its pairs, or
    leads a new one. Joining only leaders keeps a chain of small steps (a slow pan) from merging distinct photos."""
    groups: dict[int, list[int]] = {}
    for i in order:
        leaders = [(score, j) for j, score in pairs.get(i, ()) if j in groups]
        if leaders:
            groups[max(leaders)[1]].append(i)
        else:
            groups[i] = [i]
    return list(groups.values())

"""A generated captioned library for `glance tune`: painted photos whose captions say what they show.

Each photo shows 1-3 shapes (circle, square, triangle) of one colour on a plain or striped background, at
random places and sizes; its sidecar caption names the count, colour, shape and background ("two red squares on
a striped background"). Several photos share a caption (a class), so a caption query has several right answers.
With random-weight models the text and image spaces are unrelated (retrieval is at chance) until tuning learns
the map, and what it learns must carry to held-out photos, which it never sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 96
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 215, 40),
           "purple": (140, 50, 170), "orange": (245, 140, 20), "white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")
COUNTS = {1: "one", 2: "two", 3: "three"}
BACKGROUNDS = {"plain": (128, 128, 128), "striped": (128, 128, 128)}


@dataclass(frozen=True)
class Photo:
    name: str
    colour: str
    shape: str
    count: int
    background: str

    @property
    def caption(self) -> str:
        noun = self.shape if self.count == 1 else self.shape + "s"
        return f"{COUNTS[self.count]} {self.colour} {noun} on a {self.background} background"

    @property
    def label(self) -> tuple[str, str, int, str]:
        return self.colour, self.shape, self.count, self.background


def paint(photo: Photo, rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[photo.background])
    draw = ImageDraw.Draw(image)
    if photo.background == "striped":
        for y in range(0, SIZE, 8):
            draw.rectangle([0, y, SIZE, y + 3], fill=(60, 60, 60))
    cells = rng.permutation(9)[:photo.count]  # a 3x3 grid keeps shapes apart, so the count stays visible
    for cell in cells:
        size = int(rng.integers(14, 26))
        x0 = int(cell % 3 * 32 + rng.integers(2, 30 - size + 4))
        y0 = int(cell // 3 * 32 + rng.integers(2, 30 - size + 4))
        box = [x0, y0, x0 + size, y0 + size]
        fill = COLOURS[photo.colour]
        if photo.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif photo.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x0, y0 + size), (x0 + size, y0 + size), (x0 + size // 2, y0)], fill=fill)
    return image


def photos(count: int, seed: int = 0) -> list[Photo]:
    rng = np.random.default_rng(seed)
    return [Photo(f"photo_{i:04d}.png", str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)),
                  int(rng.integers(1, 4)), str(rng.choice(list(BACKGROUNDS)))) for i in range(count)]


def write(root: Path, count: int, seed: int = 0) -> list[Photo]:
    """Paint `count` photos with their sidecar captions under root; returns what each one shows."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    made = photos(count, seed)
    for photo in made:
        paint(photo, rng).save(root / photo.name)
        (root / f"{photo.name}.txt").write_text(photo.caption + "\n")
    return made

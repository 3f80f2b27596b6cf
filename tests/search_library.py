"""A small generated photo library, indexed by the real indexer, for the search tests.

Photos are painted and saved with EXIF (taken-at date, camera), captions sit beside them as sidecar files, and
free-standing texts come from a captions CSV; `indexer.pipeline.index` builds the index with the tiny models.
The tests rely on LIBRARY (what each photo looks like, where it is, when it was taken) and on the Library.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

import store

SIZE = (96, 64)


def solid(rgb):
    return lambda: Image.new("RGB", SIZE, rgb)


def stripes(rgb, period=8):
    def paint():
        a = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        a[::period] = rgb
        a[1::period] = rgb
        return Image.fromarray(a)
    return paint


def checker(size=12):
    def paint():
        ys, xs = np.indices((SIZE[1], SIZE[0]))
        on = ((ys // size + xs // size) % 2).astype(np.uint8) * 255
        return Image.fromarray(np.stack([on, on, on], -1))
    return paint


def gradient():
    xs = np.linspace(0, 255, SIZE[0], dtype=np.float32)
    row = np.stack([xs, 255 - xs, np.full_like(xs, 128)], -1)
    return lambda: Image.fromarray(np.repeat(row[None], SIZE[1], 0).astype(np.uint8))


@dataclass(frozen=True)
class Spec:
    name: str
    relpath: str
    paint: object
    taken_at: datetime | None = None
    caption: str | None = None
    camera: str | None = "TestCam"


# Folder names that try to break or widen SQL: quotes, LIKE wildcards, backslashes, keywords.
LIBRARY = [
    Spec("red", "plain/red.jpg", solid((220, 30, 30)), datetime(2021, 3, 1, 10), "a red square"),
    Spec("red2", "plain/sub/red2.png", solid((205, 40, 35)), datetime(2021, 3, 2, 11)),
    Spec("green", "it's/green.png", solid((30, 200, 40)), datetime(2022, 7, 14, 9), "green field"),
    Spec("blue", "a%b/blue.png", solid((30, 40, 220)), datetime(2022, 7, 31, 23, 59)),
    Spec("yellow", "a_b/yellow.png", solid((230, 220, 30)), datetime(2022, 8, 1, 0, 0), "yellow sun"),
    Spec("white", "axb/white.png", solid((250, 250, 250)), datetime(2023, 1, 5)),
    Spec("black", "x' OR '1'='1/black.png", solid((5, 5, 5)), None),
    Spec("stripes", "back\\slash/stripes.png", stripes((255, 255, 255)), datetime(2023, 6, 1), "white stripes"),
    Spec("checker", "2023/trip/checker.png", checker(), datetime(2023, 7, 10), "a chess board"),
    Spec("gradient", "2023/trip-old/gradient.png", gradient(), datetime(2023, 7, 11)),
    Spec("cyan", "2023/trip/deep/cyan.png", solid((30, 220, 220)), datetime(2023, 12, 31, 23, 59, 59)),
    Spec("purple", "plain/purple.png", solid((140, 30, 160)), datetime(2024, 2, 29), camera=None),
]
FREE_TEXTS = ["receipt", "mountain lake at dawn", "a birthday cake", "red"]


@dataclass
class Library:
    root: Path
    db: Path
    ids: dict[str, str]  # name -> photo id
    vectors: dict[str, np.ndarray]  # name -> stored image vector
    outside: Path  # a file outside the root that a symlink in the root points to
    extra_rows: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        spec = next(s for s in LIBRARY if s.name == name)
        return self.root / spec.relpath

    def name_of(self, photo_id: str) -> str:
        return next(n for n, i in {**self.ids, **self.extra_rows}.items() if i == photo_id)


def paint_files(root: Path) -> None:
    for spec in LIBRARY:
        target = root / spec.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        if spec.taken_at:
            exif.get_ifd(0x8769)[36867] = spec.taken_at.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
        if spec.camera:
            exif[272] = spec.camera  # Model
        options = {"quality": 95} if target.suffix == ".jpg" else {}
        spec.paint().save(target, exif=exif.tobytes(), **options)
        if spec.caption:
            Path(f"{target}.txt").write_text(spec.caption)


def write_index(db: Path, root: Path, vision, text, free_texts_csv: Path) -> None:
    from indexer.pipeline import IndexOptions, index

    summary = index(IndexOptions(paths=[str(root)], db=db, captions=[str(free_texts_csv)], encoders=(vision, text),
                                 precision="fp32"))
    assert not summary.problems, summary.problems


def stored_rows(db: Path) -> dict[str, dict]:
    """relpath -> {id, vector} of every indexed photo."""
    images = store.Store(db).table(store.IMAGES).to_arrow().select(["id", "relpath", "vector"]).to_pylist()
    return {row["relpath"]: row for row in images}


def build(base: Path, vision, text) -> Library:
    """The library under base/photos, a file outside it under base/outside, and the index under base/index."""
    root = (base / "photos").resolve()
    paint_files(root)
    outside = base / "outside" / "secret.png"
    outside.parent.mkdir(parents=True)
    Image.new("RGB", SIZE, (90, 90, 90)).save(outside)
    (root / "links").mkdir()
    os.symlink(outside, root / "links" / "escape.png")
    free_texts = base / "free-texts.csv"
    free_texts.write_text("path,caption\n" + "".join(f",{t}\n" for t in FREE_TEXTS))
    write_index(base / "index", root, vision, text, free_texts)
    rows = stored_rows(base / "index")
    ids = {s.name: rows[s.relpath]["id"] for s in LIBRARY}
    vectors = {s.name: np.asarray(rows[s.relpath]["vector"], np.float32) for s in LIBRARY}
    return Library(root, base / "index", ids, vectors, outside, {"escape": rows["links/escape.png"]["id"]})

"""A small generated photo library and its index, for the search tests.

It stands in for `python -m indexer` (not ready yet): images are painted, embedded with the tiny models,
and written with the store schema through `store.upsert`, with the meta keys the indexer records.
To use the real indexer later, replace `write_index` with a call to it; the tests only rely on
LIBRARY (what each photo looks like, where it is, when it was taken) and on the returned Library.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from models import PREPROCESS_VERSION
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


def paint_files(root: Path) -> dict[str, Image.Image]:
    images = {}
    for spec in LIBRARY:
        target = root / spec.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        image = spec.paint()
        image.save(target, quality=95) if target.suffix == ".jpg" else image.save(target)
        images[spec.name] = Image.open(target).convert("RGB")
    return images


def thumbnail(image: Image.Image) -> bytes:
    small = image.copy()
    small.thumbnail((64, 64))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=85)
    return out.getvalue()


def write_index(db: Path, root: Path, vision, text, vision_spec: str, text_spec: str,
                images: dict[str, Image.Image], link: tuple[str, Image.Image] | None = None) -> tuple[dict, dict, str]:
    """Rows for every LIBRARY photo (plus an optional symlinked photo), its captions and free texts, and meta."""
    dim = vision.dim
    names = list(images)
    vectors = vision.embed_images([images[n] for n in names]).numpy()
    specs = {s.name: s for s in LIBRARY}
    rows, ids = [], {}
    for name, vector in zip(names, vectors):
        spec = specs[name]
        rows.append(_image_row(str(root), spec.relpath, images[name], vector, spec.taken_at, spec.camera, bool(spec.caption)))
        ids[name] = rows[-1]["id"]
    link_id = ""
    if link:
        relpath, image = link
        vector = vision.embed_images([image]).numpy()[0]
        rows.append(_image_row(str(root), relpath, image, vector, None, None, False))
        link_id = rows[-1]["id"]
    st = store.Store(db)
    st.create_tables(dim)
    store.upsert(st.table(store.IMAGES), pa.Table.from_pylist(rows, schema=store.images_schema(dim)))
    store.upsert(st.table(store.CAPTIONS), _caption_rows(ids, text, dim))
    st.write_meta({
        "vision_model": vision_spec, "text_model": text_spec, "model_version": "v1.5", "dim": dim,
        "preprocess_version": PREPROCESS_VERSION, "schema_version": store.SCHEMA_VERSION,
        "last_indexed": "2024-03-01T12:00:00", "roots": [str(root)],
    })
    return ids, dict(zip(names, vectors)), link_id


def _image_row(root: str, relpath: str, image: Image.Image, vector, taken_at, camera, has_caption) -> dict:
    path = Path(root) / relpath
    return {
        "id": store.image_id(root, relpath), "root": root, "relpath": relpath,
        "size": path.stat().st_size if path.exists() else 0, "mtime_ns": 1_700_000_000_000_000_000,
        "sha256": "0" * 64, "width": image.width, "height": image.height, "taken_at": taken_at,
        "camera": camera, "has_caption": has_caption, "thumb": thumbnail(image),
        "indexed_at": datetime(2024, 3, 1, 12), "vector": [float(x) for x in vector],
    }


def _caption_rows(ids: dict[str, str], text, dim: int) -> pa.Table:
    entries = [(ids[s.name], s.caption, "sidecar") for s in LIBRARY if s.caption]
    entries += [("", t, "file") for t in FREE_TEXTS]
    # Captions live in the image space, so they are embedded as `search_query: ` (as Nomic trained them).
    vectors = text.embed_queries([t for _, t, _ in entries]).numpy()
    rows = [{"id": store.caption_id(i, src, t), "image_id": i, "text": t, "source": src, "vector": [float(x) for x in v]}
            for (i, t, src), v in zip(entries, vectors)]
    return pa.Table.from_pylist(rows, schema=store.captions_schema(dim))


def build(base: Path, vision, text, vision_spec: str, text_spec: str) -> Library:
    """The library under base/photos, a file outside it under base/outside, and the index under base/index."""
    root = (base / "photos").resolve()
    images = paint_files(root)
    outside = base / "outside" / "secret.png"
    outside.parent.mkdir(parents=True)
    Image.new("RGB", SIZE, (90, 90, 90)).save(outside)
    (root / "links").mkdir()
    os.symlink(outside, root / "links" / "escape.png")
    link = ("links/escape.png", Image.open(outside).convert("RGB"))
    ids, vectors, link_id = write_index(base / "index", root, vision, text, vision_spec, text_spec, images, link)
    return Library(root, base / "index", ids, vectors, outside, {"escape": link_id})

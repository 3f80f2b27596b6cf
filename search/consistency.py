"""Caption–image consistency: the captions that match their own photo worse than most of the library do, for
cleaning image–caption datasets (`glance check-captions`, the Index tab, /check_captions).

Each caption that belongs to a photo is scored by the cosine between its vector and its photo's, in the shared
space. What is typical differs by model and library, so a caption is judged against the others: its robust z
score is (cosine - median) / (1.4826 x MAD), and captions at or below CHECK_Z are listed, the furthest below
first. Each comes with the captions of the NEIGHBOURS captioned photos nearest to its photo, as suggestions.
It needs the index only (no model): the vectors were stored when the captions were indexed.

    check_captions(view, top) -> CaptionReport(checked, median, mad, flagged=[CaptionCheck, ...])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from store import vector_matrix

from . import files

CHECK_Z = -3.0  # beyond the noise: about 1 caption in 700 of a normal spread
NEIGHBOURS = 3
MIN_CAPTIONS = 10  # below this, "most of the library" means nothing


@dataclass(frozen=True)
class CaptionCheck:
    text: str
    source: str
    image_id: str
    path: str
    cosine: float
    z: float
    suggestions: tuple[str, ...]  # captions of the nearest captioned photos


@dataclass(frozen=True)
class CaptionReport:
    checked: int
    median: float
    mad: float
    flagged: list[CaptionCheck]


def check_captions(view, top: int = 50) -> CaptionReport:
    captions = view.photo_caption_vectors()
    if captions.num_rows < MIN_CAPTIONS:
        return CaptionReport(captions.num_rows, float("nan"), float("nan"), [])
    photos = view.photo_columns(None, ["id", "root", "relpath", "vector"])
    row_of = {photo_id: i for i, photo_id in enumerate(photos["id"].to_pylist())}
    owners = captions["image_id"].to_pylist()
    kept = [i for i, owner in enumerate(owners) if owner in row_of]  # a caption whose photo is gone: skipped
    photo_vectors = vector_matrix(photos["vector"])
    caption_vectors = vector_matrix(captions["vector"])[kept]
    own = photo_vectors[[row_of[owners[i]] for i in kept]]
    cosines = np.sum(caption_vectors * own, axis=1)
    median = float(np.median(cosines))
    mad = float(np.median(np.abs(cosines - median))) or 1e-6
    z = (cosines - median) / (1.4826 * mad)
    worst = [j for j in np.argsort(z) if z[j] <= CHECK_Z][:top]
    texts, sources = captions["text"].to_pylist(), captions["source"].to_pylist()
    captioned = sorted({owners[i] for i in kept})
    flagged = []
    for j in worst:
        i = kept[j]
        photo = row_of[owners[i]]
        flagged.append(CaptionCheck(texts[i], sources[i] or "", owners[i],
                                    files.display_path(photos["root"][photo].as_py(), photos["relpath"][photo].as_py()),
                                    float(cosines[j]), float(z[j]),
                                    _suggestions(owners[i], photo_vectors, row_of, captioned, owners, texts)))
    return CaptionReport(len(kept), median, mad, flagged)


def _suggestions(owner: str, vectors: np.ndarray, row_of: dict, captioned: list[str], owners: list, texts: list):
    others = [p for p in captioned if p != owner]
    if not others:
        return ()
    scores = vectors[[row_of[p] for p in others]] @ vectors[row_of[owner]]
    nearest = [others[k] for k in np.argsort(-scores)[:NEIGHBOURS]]
    by_photo: dict[str, str] = {}
    for photo_id, text in zip(owners, texts):
        if photo_id in nearest and photo_id not in by_photo:
            by_photo[photo_id] = text
    return tuple(by_photo[p] for p in nearest if p in by_photo)

"""Captions and free-standing texts: nearest to an image, and matching a text by keyword and by meaning,
fused by reciprocal-rank fusion (Cormack et al.: score = sum over the lists of 1 / (RRF_K + rank))."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from store import CAPTIONS, Store

from .files import display_path
from .query import Term
from .results import TextHit

RRF_K = 60
MAX_KEYWORDS = 8
TEXT_COLUMNS = ["id", "image_id", "text", "source"]


def nearest_texts(store: Store, vector: np.ndarray, top: int) -> list[TextHit]:
    """Captions and texts nearest to a vector (cosine, best first)."""
    if store.captions is None:
        return []
    rows, _ = store.nearest(CAPTIONS, vector, None, top, TEXT_COLUMNS)
    return with_paths(store, [_text_hit(row, row["score"], row["score"], "semantic") for row in rows.to_pylist()])


def matching_texts(store: Store, terms: list[Term], vector: np.ndarray, top: int) -> list[TextHit]:
    """The semantic half uses the whole query vector (weights, negatives); the keyword half looks for the words
    of the added terms."""
    if store.count_captions() == 0:
        return []
    depth = max(3 * top, 30)
    semantic, _ = store.nearest(CAPTIONS, vector, None, depth, TEXT_COLUMNS)
    keyword = store.keyword_captions(keywords(terms), depth, TEXT_COLUMNS)
    return with_paths(store, fuse(semantic.to_pylist(), keyword, top))


def keywords(terms: list[Term]) -> list[str]:
    """Distinct lower-case words (2+ characters) of the added terms, at most MAX_KEYWORDS."""
    words = [w for t in terms if t.weight > 0 for w in re.findall(r"\w+", t.text.lower()) if len(w) > 1]
    return list(dict.fromkeys(words))[:MAX_KEYWORDS]


def fuse(semantic: list[dict], keyword: list[dict], top: int) -> list[TextHit]:
    """Reciprocal-rank fusion of two best-first lists of caption rows."""
    fused: dict[str, dict] = {}
    for source, rows in (("semantic", semantic), ("keyword", keyword)):
        for rank, row in enumerate(rows, start=1):
            entry = fused.setdefault(row["id"], {"row": row, "score": 0.0, "by": set(), "cosine": None})
            entry["score"] += 1.0 / (RRF_K + rank)
            entry["by"].add(source)
            if source == "semantic":
                entry["cosine"] = row["score"]
    ranked = sorted(fused.values(), key=lambda e: -e["score"])[:top]
    return [_text_hit(e["row"], e["score"], e["cosine"], "both" if len(e["by"]) == 2 else next(iter(e["by"])))
            for e in ranked]


def with_paths(store: Store, hits: list[TextHit]) -> list[TextHit]:
    """Each caption with its photo's path (read from the same snapshot, so the photo is there)."""
    paths = store.photo_paths(sorted({h.image_id for h in hits if h.image_id}))
    return [replace(hit, path=display_path(paths[hit.image_id]["root"], paths[hit.image_id]["relpath"]))
            if hit.image_id in paths else hit for hit in hits]


def _text_hit(row: dict, score: float, cosine: float | None, matched: str) -> TextHit:
    return TextHit(row["text"], float(score), row["image_id"] or "", row["source"] or "", row["id"],
                   None if cosine is None else float(cosine), matched)

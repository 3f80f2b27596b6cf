"""Captions and free-standing texts: nearest to an image, and matching a text by several routes fused by
reciprocal-rank fusion (Cormack et al.: score = sum over the routes of 1 / (RRF_K + rank)).

The routes of caption search: "keyword" (BM25 on the full-text index, else a substring scan), "space" (the
image-text model's text vectors) and "caption_model" (the index's caption model, a text-to-text space that
finds paraphrases sharing no word with the query). Each hit keeps its rank in every route, before fusion.
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from store import CAPTION_VECTOR, CAPTIONS, Store

from .files import display_path
from .query import Term
from .results import TextHit

RRF_K = 60
MAX_KEYWORDS = 8
TEXT_COLUMNS = ["id", "image_id", "text", "source"]


ROUTES = ("keyword", "space", "caption_model")
# Weighted RRF. A caption model is a model made for text-to-text similarity, which the user chose for exactly
# this, and it beats a text-image space at finding captions; its ranks count double, so agreement of the other
# two routes can still outvote it.
ROUTE_WEIGHTS = {"keyword": 1.0, "space": 1.0, "caption_model": 2.0}
FUSION_DEPTH = 30  # rows read per route: fixed, so a caption's fused rank does not depend on how many are asked


def nearest_texts(store: Store, vector: np.ndarray, top: int) -> list[TextHit]:
    """Captions and texts nearest to a vector (cosine, best first)."""
    if store.captions is None:
        return []
    rows, _ = store.nearest(CAPTIONS, vector, None, top, TEXT_COLUMNS)
    return with_paths(store, [_text_hit(row, row["score"], row["score"], {"space": rank})
                              for rank, row in enumerate(rows.to_pylist(), start=1)])


def matching_texts(store: Store, terms: list[Term], vector: np.ndarray, caption_vector: np.ndarray | None,
                   top: int) -> list[TextHit]:
    """The vector routes use the whole query (weights, negatives); the keyword route looks for the words of the
    added terms. `caption_vector` is the query in the caption model's space (None: the index has none)."""
    if store.count_captions() == 0:
        return []
    return with_paths(store, fuse(route_lists(store, terms, vector, caption_vector, max(top, FUSION_DEPTH)), top))


def route_lists(store: Store, terms: list[Term], vector: np.ndarray, caption_vector: np.ndarray | None,
                depth: int) -> dict[str, list[dict]]:
    """Each route's best-first caption rows, `depth` deep."""
    lists = {"keyword": store.keyword_captions(keywords(terms), depth, TEXT_COLUMNS),
             "space": store.nearest(CAPTIONS, vector, None, depth, TEXT_COLUMNS)[0].to_pylist()}
    if caption_vector is not None:
        rows, _ = store.nearest(CAPTIONS, caption_vector, None, depth, TEXT_COLUMNS, column=CAPTION_VECTOR)
        lists["caption_model"] = rows.to_pylist()
    return lists


def keywords(terms: list[Term]) -> list[str]:
    """Distinct lower-case words (2+ characters) of the added terms, at most MAX_KEYWORDS."""
    words = [w for t in terms if t.weight > 0 for w in re.findall(r"\w+", t.text.lower()) if len(w) > 1]
    return list(dict.fromkeys(words))[:MAX_KEYWORDS]


def fuse(lists: dict[str, list[dict]], top: int) -> list[TextHit]:
    """Reciprocal-rank fusion of best-first lists of caption rows, one list per route."""
    fused = rank_fusion({route: [row["id"] for row in rows] for route, rows in lists.items()})
    rows = {row["id"]: row for rows in lists.values() for row in rows}
    cosines = {row["id"]: row["score"] for row in lists.get("space", [])}
    return [_text_hit(rows[key], score, cosines.get(key), routes) for key, score, routes in fused[:top]]


def rank_fusion(lists: dict[str, list[str]]) -> list[tuple[str, float, dict[str, int]]]:
    """(key, RRF score, {route: rank}) best first, for best-first lists of keys (a key counts once per list,
    at its best rank). Ties keep the order in which keys were first seen."""
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for route, keys in lists.items():
        for rank, key in enumerate(dict.fromkeys(keys), start=1):
            scores[key] = scores.get(key, 0.0) + ROUTE_WEIGHTS.get(route, 1.0) / (RRF_K + rank)
            ranks.setdefault(key, {})[route] = rank
    return [(key, scores[key], ranks[key]) for key in sorted(scores, key=lambda k: -scores[k])]


def with_paths(store: Store, hits: list[TextHit]) -> list[TextHit]:
    """Each caption with its photo's path (read from the same snapshot, so the photo is there)."""
    paths = store.photo_paths(sorted({h.image_id for h in hits if h.image_id}))
    return [replace(hit, path=display_path(paths[hit.image_id]["root"], paths[hit.image_id]["relpath"]))
            if hit.image_id in paths else hit for hit in hits]


def _text_hit(row: dict, score: float, cosine: float | None, routes: dict[str, int]) -> TextHit:
    return TextHit(row["text"], float(score), row["image_id"] or "", row["source"] or "", row["id"],
                   None if cosine is None else float(cosine), {route: routes.get(route) for route in ROUTES})

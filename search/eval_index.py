"""`glance eval` rows for the photos' vector index: what an approximate or compressed index costs in recall.

When the images table has a vector index, the caption -> photo queries of the exact rows are asked again through
LanceDB twice: exactly (float32, every photo scored) and through the index, tuned as search tunes it (nprobes;
refine for the quantized kinds, store/vector_index.py). Each query asks for DEPTH photos, what recall@10 needs.
A query whose photos are not among them is not found at 1, 5 or 10 and adds 0 to the MRR: the MRR here is
MRR@10, so it can sit a little below the exact rows' (each query ranked past 10 adds at most 1/11 there), and the
float32 row is its fair reference. Ranks count ties in the query's favour and the intervals reuse the exact rows'
bootstrap resamples (same seed, same queries), as in search/evaluate.py. ms/query is the median time of one
query of LATENCY_TOP photos through LanceDB (all cores), without the model or the query embedding.
"""
from __future__ import annotations

import time

import numpy as np

from store import Store

from .evaluate import KS, LATENCY_QUERIES, LATENCY_TOP, METRICS, Pairs, bootstrap, figure, per_query_metrics

DEPTH = max(KS)
BATCH = 256  # queries per LanceDB call
EXACT = "float32 exact"


def index_rows(store: Store, pairs: Pairs, resamples: int, seed: int) -> list[dict]:
    """The float32 exact row and the index's row, or none when the photos have no vector index."""
    view = store.pinned()
    info = view.vector_index_info(DEPTH)
    if info is None or not len(pairs.texts):
        return []
    float32 = {"kind": EXACT, "bytes_per_photo": 4 * pairs.photos.shape[1], "index_bytes": None, "nprobes": None,
               "refine_factor": None}
    return [measured(view, pairs, float32, True, resamples, seed), measured(view, pairs, info, False, resamples, seed)]


def measured(view: Store, pairs: Pairs, described: dict, exact: bool, resamples: int, seed: int) -> dict:
    ranks = list_ranks(view, pairs, exact)
    return {**described, "depth": DEPTH, "ms_per_query": ms_per_query(view, pairs.texts, exact),
            "caption_to_photo": dict(zip(METRICS, bootstrap(per_query_metrics(ranks), resamples, seed)))}


def list_ranks(view: Store, pairs: Pairs, exact: bool) -> np.ndarray:
    """Per caption text, the rank of its best photo in LanceDB's top DEPTH (inf when none of its photos is there)."""
    positives = positive_ids(pairs)
    ranks = np.full(len(pairs.texts), np.inf)
    for start in range(0, len(pairs.texts), BATCH):
        hits = view.top_photos(pairs.texts[start:start + BATCH], DEPTH, exact=exact)
        queries = hits["query_index"].to_numpy() + start
        ids, scores = hits["id"].to_pylist(), hits["score"].to_numpy()
        for query in np.unique(queries):
            rows = np.flatnonzero(queries == query)
            ranks[query] = rank_in_list([ids[r] for r in rows], scores[rows], positives[query])
    return ranks


def rank_in_list(ids: list[str], scores: np.ndarray, positives: set[str]) -> float:
    """1 + the hits scoring strictly above the best positive among them (ties in the query's favour)."""
    found = [score for photo, score in zip(ids, scores) if photo in positives]
    return float(1 + np.sum(scores > max(found))) if found else np.inf


def positive_ids(pairs: Pairs) -> list[set[str]]:
    positives: list[set[str]] = [set() for _ in range(len(pairs.texts))]
    for text, photo in zip(pairs.pair_text, pairs.pair_photo):
        positives[text].add(pairs.photo_ids[photo])
    return positives


def ms_per_query(view: Store, queries: np.ndarray, exact: bool) -> float:
    view.top_photos(queries[:1], LATENCY_TOP, exact=exact)  # the first query opens the index files
    times = []
    for query in queries[:LATENCY_QUERIES]:
        started = time.perf_counter()
        view.top_photos(query[None, :], LATENCY_TOP, exact=exact)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


# ----- the table -------------------------------------------------------------------------------------------------
def section_text(report: dict) -> list[str]:
    rows = report.get("vector_index_rows") or []
    if not rows:
        return []
    index = rows[-1]
    tuning = f"nprobes {index['nprobes']}" + (f", refine x{index['refine_factor']}" if index["refine_factor"] else "")
    heading = (f"{'kind':<14} {'bytes/photo':>11} {'index_MB':>8} {'ms/query':>8}  "
               + "".join(f"{m:<18}" for m in METRICS))
    lines = [f"caption -> photo through LanceDB: top {index['depth']} per query, the vector index as search uses it "
             f"({tuning}); MRR counts only the top {index['depth']}", heading.rstrip()]
    for row in rows:
        size = "-" if row["index_bytes"] is None else f"{row['index_bytes'] / 1e6:.2f}"
        cells = "".join(f"{figure(row['caption_to_photo'][m]):<18}" for m in METRICS)
        lines.append(f"{row['kind']:<14} {row['bytes_per_photo']:>11} {size:>8} {row['ms_per_query']:>8.2f}  "
                     f"{cells}".rstrip())
    return ["", *lines]

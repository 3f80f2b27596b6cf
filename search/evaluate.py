"""`glance eval`: how well the index finds its own captioned photos, from the vectors it already stores.

Every caption that belongs to a photo pairs that photo's stored vector with the caption's stored vector (embedded
as the family embeds captions). Nothing is re-embedded: the figures measure the index exactly as search uses it.

* caption -> photo: each distinct caption text is one query, ranked against every photo in the index; its
  positives are all the photos that carry that exact text (a caption shared by several photos is one query).
* photo -> caption: each captioned photo is one query, ranked against every distinct caption text; its positives
  are its own captions.

A query's rank is 1 + the number of candidates that score strictly above its best positive (ties count in the
query's favour). recall@k is the share of queries ranked k or better, MRR the mean of 1/rank. Each figure comes
with a 95% percentile bootstrap interval over queries; every row of one direction uses the same resamples, so
the rows compare fairly. Scoring is exact (numpy, brute force, in blocks so memory stays bounded); its time
grows with captions x photos: ~0.8 s per row for 5,000 captioned photos on 2 cores, minutes at 100,000.
Rows: the full dimension, then each Matryoshka size the index's model was trained for, vectors cut to their
first d components and re-normalised, as `glance embed --dim` does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.errors import UsageError
from models.dims import supported_dims
from store import DIM, MODEL_KEYS, MODEL_VERSION, Store, StoreError, no_index_message, vector_matrix

MIN_CAPTIONED_PHOTOS = 20
KS = (1, 5, 10)
METRICS = (*(f"recall@{k}" for k in KS), "mrr")
RESAMPLES = 1000
CONFIDENCE = 0.95
SCORE_BLOCK_BYTES = 64 << 20  # one block of the query x candidate score matrix
BOOTSTRAP_BLOCK = 1_000_000  # resampled query indices held at once (their metric values: 32 MB)
LATENCY_QUERIES = 50  # single queries timed per dimension (the median is reported)
LATENCY_TOP = 10  # what one timed query asks for, as a search page would
DIRECTIONS = ("caption_to_photo", "photo_to_caption")


@dataclass(frozen=True)
class Pairs:
    """The stored vectors, unit length, and which caption text belongs to which photo."""
    photos: np.ndarray  # (photos, dim): every photo with a vector, captioned or not (all are candidates)
    texts: np.ndarray  # (distinct caption texts, dim)
    pair_text: np.ndarray  # one entry per distinct (text, photo) pair: the text's row ...
    pair_photo: np.ndarray  # ... and the photo's row
    photo_ids: tuple[str, ...] = ()  # each photo row's id (the vector index rows match LanceDB's hits by id)

    @property
    def captioned_photos(self) -> np.ndarray:
        return np.unique(self.pair_photo)


def build_pairs(photo_ids: list[str], photo_vectors: np.ndarray, caption_photo_ids: list[str],
                caption_texts: list[str], caption_vectors: np.ndarray) -> Pairs:
    """Pairs from the rows as stored. A text repeated (on several photos, or from several sources) keeps its
    first vector: the same text is embedded the same way wherever it comes from."""
    row_of_photo = {photo_id: row for row, photo_id in enumerate(photo_ids)}
    row_of_text: dict[str, int] = {}
    first_caption_row: list[int] = []
    pairs: set[tuple[int, int]] = set()
    for caption_row, (photo_id, text) in enumerate(zip(caption_photo_ids, caption_texts)):
        photo = row_of_photo.get(photo_id)
        if photo is None:  # its photo has no vector (yet): nothing to rank it against
            continue
        if text not in row_of_text:
            row_of_text[text] = len(first_caption_row)
            first_caption_row.append(caption_row)
        pairs.add((row_of_text[text], photo))
    ordered = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    dim = photo_vectors.shape[1]
    texts = caption_vectors[first_caption_row] if first_caption_row else np.zeros((0, dim), np.float32)
    return Pairs(unit(photo_vectors), unit(texts), ordered[:, 0], ordered[:, 1], tuple(photo_ids))


def load_pairs(store: Store) -> tuple[Pairs, dict]:
    """The pairs of one consistent snapshot of the index, and its meta."""
    if not store.exists():
        raise StoreError(no_index_message(store.path))
    with store.lance_errors():
        view = store.pinned()
        meta = view.current_meta()
        photos = view.photo_vectors()
        captions = view.photo_caption_vectors()
    pairs = build_pairs(photos["id"].to_pylist(), vector_matrix(photos["vector"]), captions["image_id"].to_pylist(),
                        captions["text"].to_pylist(), vector_matrix(captions["vector"]))
    return pairs, meta


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` components, re-normalised (a Matryoshka size)."""
    return vectors if dim == vectors.shape[1] else unit(vectors[:, :dim])


# ----- ranking and metrics -----------------------------------------------------------------------------------
def first_positive_ranks(queries: np.ndarray, candidates: np.ndarray, positive_query: np.ndarray,
                         positive_candidate: np.ndarray) -> np.ndarray:
    """Per query, the rank of its best-scoring positive among all candidates (1 = top). Every query must have
    at least one positive (positive_query[i] is the query row of the i-th positive, positive_candidate[i] its
    candidate row)."""
    order = np.argsort(positive_query, kind="stable")
    positive_query, positive_candidate = positive_query[order], positive_candidate[order]
    ranks = np.empty(len(queries), np.int64)
    block = max(1, SCORE_BLOCK_BYTES // (4 * max(1, len(candidates))))
    for start in range(0, len(queries), block):
        stop = min(len(queries), start + block)
        scores = queries[start:stop] @ candidates.T
        low, high = np.searchsorted(positive_query, [start, stop])
        rows, columns = positive_query[low:high] - start, positive_candidate[low:high]
        best = np.full(stop - start, -np.inf, np.float32)
        np.maximum.at(best, rows, scores[rows, columns])
        ranks[start:stop] = 1 + (scores > best[:, None]).sum(axis=1)  # no positive scores above the best one
    return ranks


def per_query_metrics(ranks: np.ndarray) -> np.ndarray:
    """(metrics, queries): a row per entry of METRICS, each query's hit (0/1) at k, then its reciprocal rank."""
    return np.stack([*((ranks <= k).astype(np.float64) for k in KS), 1.0 / ranks])


def bootstrap(values: np.ndarray, resamples: int, seed: int) -> list[dict]:
    """Per metric row of `values` (metrics, queries): the mean and its percentile bootstrap interval."""
    queries = values.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(values)))
    block = max(1, BOOTSTRAP_BLOCK // queries)
    for start in range(0, resamples, block):
        picks = rng.integers(0, queries, (min(block, resamples - start), queries))
        means[start:start + len(picks)] = values[:, picks].mean(axis=-1).T
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail], axis=0)
    return [{"value": float(v), "low": float(lo), "high": float(hi)}
            for v, lo, hi in zip(values.mean(axis=1), low, high)]


def direction_figures(ranks: np.ndarray, resamples: int, seed: int) -> dict:
    return dict(zip(METRICS, bootstrap(per_query_metrics(ranks), resamples, seed)))


def exact_ms_per_query(text_queries: np.ndarray, photos: np.ndarray) -> float:
    """Median time of one exact text search (score every photo, take the top LATENCY_TOP), in ms: brute force on
    one core at this dimension, without LanceDB, the model or the query embedding. einsum, not BLAS: a single
    query is too small for BLAS threads, whose hand-offs on a busy machine measured 10x the work itself."""
    top = min(LATENCY_TOP, len(photos)) - 1
    times = []
    for query in text_queries[:LATENCY_QUERIES]:
        started = time.perf_counter()
        np.argpartition(-np.einsum("ij,j->i", photos, query), top)[:top + 1]
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def evaluate_dim(pairs: Pairs, dim: int, resamples: int, seed: int) -> dict:
    photos, texts = truncate(pairs.photos, dim), truncate(pairs.texts, dim)
    captioned = pairs.captioned_photos
    to_photo = first_positive_ranks(texts, photos, pairs.pair_text, pairs.pair_photo)
    query_of_photo = np.searchsorted(captioned, pairs.pair_photo)
    to_caption = first_positive_ranks(photos[captioned], texts, query_of_photo, pairs.pair_text)
    return {"dim": dim, "bytes_per_photo": dim * 4, "exact_ms_per_query": exact_ms_per_query(texts, photos),
            "caption_to_photo": direction_figures(to_photo, resamples, seed),
            "photo_to_caption": direction_figures(to_caption, resamples, seed)}


def evaluate(pairs: Pairs, dims: tuple[int, ...], resamples: int = RESAMPLES, seed: int = 0) -> list[dict]:
    return [evaluate_dim(pairs, dim, resamples, seed) for dim in dims]


def run(db: str | None, seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """The whole evaluation of the index at `db`, as `glance eval --json` prints it."""
    store = Store(db)
    pairs, meta = load_pairs(store)
    captioned = len(pairs.captioned_photos)
    if captioned < MIN_CAPTIONED_PHOTOS:
        raise UsageError(f"only {captioned} captioned photos in the index at {store.path}; evaluation needs at "
                         f"least {MIN_CAPTIONED_PHOTOS} for the figures to mean anything")
    full = pairs.photos.shape[1]
    dims = supported_dims(int(meta.get(DIM) or full), str(meta.get(MODEL_VERSION) or ""))
    return {"db": str(store.path), **{key: meta.get(key) for key in MODEL_KEYS},
            "photos": len(pairs.photos), "captioned_photos": captioned, "caption_texts": len(pairs.texts),
            "pairs": len(pairs.pair_text),
            "queries": {"caption_to_photo": len(pairs.texts), "photo_to_caption": captioned},
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": CONFIDENCE},
            "rows": evaluate(pairs, dims, resamples, seed),
            "vector_index_rows": _vector_index_rows(store, pairs, resamples, seed),
            "tuning": tuning_summary(store, meta)}


def tuning_summary(store: Store, meta: dict) -> dict | None:
    """The active tuning and its held-out figures (from `glance tune`): the rows here are the stored vectors
    without it, since it maps queries, not the vectors."""
    from .tuning import active

    tuning, problem = active(store, meta)
    if tuning is None:
        return {"name": None, "problem": problem} if problem else None
    return {"name": tuning.name, "method": tuning.method, "held_out": tuning.info.get("held_out")}


def _vector_index_rows(store: Store, pairs: Pairs, resamples: int, seed: int) -> list[dict]:
    from .eval_index import index_rows  # it builds on this module's metrics

    with store.lance_errors():
        return index_rows(store, pairs, resamples, seed)


# ----- the table -------------------------------------------------------------------------------------------------
def report_text(report: dict) -> str:
    b = report["bootstrap"]
    lines = [f"index: {report['db']}",
             f"models: {report['vision_model']} + {report['text_model']} ({report['model_version']}, "
             f"dim {report['dim']})",
             f"pairs: {report['pairs']} (caption, photo): {report['caption_texts']} caption texts on "
             f"{report['captioned_photos']} photos, among {report['photos']} photos",
             f"figures: value [low-high], a {b['confidence']:.0%} bootstrap interval over queries "
             f"({b['resamples']} resamples, seed {b['seed']})", *tuning_lines(report.get("tuning")), ""]
    heading = f"{'dim':>5} {'bytes/photo':>11} {'exact_ms/query':>14}  " + "".join(f"{m:<18}" for m in METRICS)
    for direction, against in (("caption_to_photo", f"ranked among {report['photos']} photos"),
                               ("photo_to_caption", f"ranked among {report['caption_texts']} caption texts")):
        lines += [f"{direction.replace('_to_', ' -> ').replace('_', ' ')}: {report['queries'][direction]} queries, "
                  f"{against}", heading.rstrip()]
        for row in report["rows"]:
            cells = "".join(f"{figure(row[direction][m]):<18}" for m in METRICS)
            lines.append(f"{row['dim']:>5} {row['bytes_per_photo']:>11} {row['exact_ms_per_query']:>14.3f}  "
                         f"{cells}".rstrip())
        lines.append("")
    from .eval_index import section_text

    return "\n".join(lines + section_text(report)).rstrip()


def tuning_lines(tuning: dict | None) -> list[str]:
    if not tuning:
        return []
    if not tuning.get("name"):
        return [f"tuning: {tuning['problem']}"]
    held = tuning.get("held_out") or {}
    base, tuned = held.get("base") or {}, held.get("tuned") or {}
    return [f"active tuning: {tuning['name']} ({tuning['method']}), held-out caption -> photo recall@5 "
            f"{base.get('recall@5', 0):.3f} -> {tuned.get('recall@5', 0):.3f} (glance tune); the rows below are "
            f"the stored vectors, as search without it sees them"]


def figure(f: dict) -> str:
    return f"{f['value']:.3f} [{f['low']:.2f}-{f['high']:.2f}]"

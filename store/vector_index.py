"""The photos' vector index (on images.vector): which kind, when it is built, rebuilt or dropped, what it costs,
and the searches `glance eval` measures it with.

Kinds (`glance index --vector-index`, meta vector_index), with what one photo costs in the index:
  auto  IVF_SQ once the table holds VECTOR_INDEX_MIN_ROWS photos: below that exact search is fast enough
  flat  IVF_FLAT: the float32 vectors grouped by partition, 4 x dim bytes
  sq    IVF_SQ: each component quantized to one byte, dim bytes
  pq    IVF_PQ: one byte per PQ_COMPONENTS_PER_CODE components (product quantization), dim / 8 bytes
An explicit kind is built once VECTOR_INDEX_TRAIN_ROWS photos can train it. The quantized kinds are searched
with refine (tune): the best candidates by their codes (REFINE_FACTOR x limit, at least REFINE_MIN_CANDIDATES)
are re-scored on the float32 vectors, which stay in the table. So a compressed index comes on top of the
vectors, it never replaces them: what it shrinks is what a search scans (and keeps in memory), not the disk.
Keeping them is also what lets another kind be built from the stored vectors, with nothing embedded again.

Every kind has sqrt(photos) IVF partitions (at the last build), and a search probes one in PROBE_SHARE of them plus
NPROBES: a probe scans ~sqrt(photos) vectors, so a search's work grows a little faster than the square root of the
library. Chosen by measurement at 100k and 1M photos (bench/query_latency.py, bench/scale.py).

Growth: each indexer run folds its new photos into the existing index (Store.compact: LanceDB's optimize adds them
to the partitions they are nearest); the partitions are retrained only when the library has doubled since the last
build. Either way the index is written as a new table version: readers keep searching the version they pinned
(store/reading.py) until the indexer publishes the new one, so a build never blocks a search.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa

from . import schema
from .schema import IMAGES, VECTOR_INDEX, VECTOR_INDEX_ROWS

# LanceDB's default, one IVF partition per ~8,192 rows, leaves ~12 partitions of 8,000 vectors at 100k photos: 20
# probes scan them all (IVF_FLAT 30 ms, IVF_SQ 16 ms). sqrt(100k) = 316 partitions of ~316, one in 8 of them probed
# (40): IVF_SQ 7.3 ms, recall@10 1.0, but 0.92 after another training. Measured over 300 queries (bench/query_latency.py
# data: 1,000 clustered themes, text-like queries included), IVF_SQ with the engine's pool of 100: at 100k photos 40
# probes gave recall@10 0.966, 60 0.987, 80 0.991; at 1M, 100 probes 0.977 (19.3 ms), 120 0.993 (22.2 ms), 145 1.0
# (25.7 ms). One in 10 plus 30 probes 62 partitions at 100k and 130 at 1M.
NPROBES = 30
PROBE_SHARE = 10
# Quantized indexes (SQ, PQ, RQ) re-rank at least REFINE_FACTOR x limit candidates exactly, and never fewer than
# REFINE_MIN_CANDIDATES: at 50k photos IVF_PQ's top 50 by code held 78% of the true top 10, its top 200 all of
# them (IVF_SQ's top 50 already did), for 1-2 ms more (bench/vector_index_kinds.py). The engine asks for a pool of
# 100: 5 x 100 candidates cost 14.2 ms at 100k photos (IVF_SQ), 2 x 100 10.2 ms, with recall@10 1.0 either way.
REFINE_FACTOR = 2
REFINE_MIN_CANDIDATES = 200
HNSW_EF = 200

# auto is IVF_SQ: as fast to build as IVF_FLAT per partition, a quarter of the bytes scanned per probe, and refine
# restores exact scores (IVF_PQ trains for minutes, 151 s at 100k; IVF_HNSW_SQ 116 s at 100k, ~20 min at 1M).
LANCE_TYPES = {"auto": "IvfSq", "flat": "IvfFlat", "sq": "IvfSq", "pq": "IvfPq"}  # as list_indices names them
# 8 components per code is one of the two sub-vector sizes LanceDB's SIMD kernels are written for. Its default,
# 16, halves the bytes, but at 20k photos (bench/vector_index_kinds.py's data) the top 50 by code then held 84%
# of the true top 10 instead of 96%: the refine margin is worth 48 more bytes (and training twice as long).
PQ_COMPONENTS_PER_CODE = 8


def chosen_kind(meta: dict) -> str:
    return meta.get(VECTOR_INDEX) or "auto"


def min_rows(kind: str) -> int:
    """Photos the table needs before the index of this kind is built (read at call time: tests lower them)."""
    return schema.VECTOR_INDEX_MIN_ROWS if kind == "auto" else schema.VECTOR_INDEX_TRAIN_ROWS


def pending_note(kind: str, photos: int, has_index: bool) -> str | None:
    """Why an explicitly chosen index is not there yet, in one line (None when it is, or auto waits as ever)."""
    if has_index or kind == "auto" or photos >= min_rows(kind):
        return None
    return (f"none yet, exact search: --vector-index {kind} is built once the index holds {min_rows(kind)} photos "
            f"(it holds {photos})")


def pq_sub_vectors(dim: int) -> int:
    """dim / 8 sub-vectors; a size 8 does not divide gets the most sub-vectors that divide it, up to that."""
    return next(n for n in range(max(1, dim // PQ_COMPONENTS_PER_CODE), 0, -1) if dim % n == 0)


def partitions(rows: int) -> int:
    """IVF partitions for an index built over `rows` photos."""
    return max(1, round(math.sqrt(rows)))


def nprobes(built_rows: int) -> int:
    """Partitions a search probes in an index built over `built_rows` photos: one in PROBE_SHARE, plus NPROBES.
    A share alone sits on the knee at 100k photos: recall@10 0.92-0.99 from one k-means training to the next."""
    return NPROBES + -(-partitions(built_rows) // PROBE_SHARE)


def index_config(kind: str, dim: int, rows: int):
    from lancedb.index import IvfFlat, IvfPq, IvfSq

    if kind == "pq":
        return IvfPq(distance_type="cosine", num_partitions=partitions(rows), num_sub_vectors=pq_sub_vectors(dim))
    config = IvfSq if kind in ("sq", "auto") else IvfFlat
    return config(distance_type="cosine", num_partitions=partitions(rows))


def tune(query, index_type: str, limit: int, built_rows: int = 0):
    """A LanceDB vector query set up for an index of this type built over `built_rows` photos (meta
    vector_index_rows), as every indexed search runs."""
    kind = index_type.lower()
    query = query.nprobes(nprobes(built_rows))
    if "hnsw" in kind:
        query = query.ef(max(HNSW_EF, limit))
    if quantized(index_type):
        query = query.refine_factor(refine_factor(limit))
    return query


def quantized(index_type: str) -> bool:
    return any(q in index_type.lower() for q in ("pq", "sq", "rq"))


def refine_factor(limit: int) -> int:
    return max(REFINE_FACTOR, -(-REFINE_MIN_CANDIDATES // max(1, limit)))


def kind_name(index_type: str) -> str:
    """LanceDB's index type as `glance eval` names the kinds: IvfPq -> ivf_pq."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", index_type).lower()


def label(index_type: str) -> str:
    return kind_name(index_type).upper()


def bytes_per_photo(listed, dim: int) -> int:
    """What one photo costs in this index, from the compression LanceDB records (float32 where there is none)."""
    compression = (getattr(listed, "index_details", None) or {}).get("compression") or {}
    bits = int(compression.get("num_bits") or 8)
    if compression.get("type") == "pq":
        return int(compression["num_sub_vectors"]) * bits // 8
    return dim * bits // 8 if compression.get("type") == "sq" else 4 * dim


def vector_index_of(table):
    """The listed IVF index on `vector`, or None."""
    return next((ix for ix in table.list_indices()
                 if ix.columns == ["vector"] and str(ix.index_type).lower().startswith("ivf")), None)


class VectorIndexQueries:
    """Mixed into store.Store; `self` is the Store."""

    # ----- the writer ----------------------------------------------------------------------------------------
    def ensure_vector_index(self) -> str | None:
        """Make the vector index the kind meta asks for: built once there are photos enough, rebuilt when the
        table has doubled or the kind changed, dropped when the kind asked for waits for more photos. Only the
        index changes, never a vector. Returns what was done, for the run's summary."""
        images = self.table(IMAGES)
        meta = self.meta()
        kind, rows, listed = chosen_kind(meta), images.count_rows(), vector_index_of(images)
        enough = rows >= min_rows(kind)
        if listed is not None and listed.index_type == LANCE_TYPES[kind]:
            grown = rows >= int(meta.get(VECTOR_INDEX_ROWS) or 0) * schema.VECTOR_INDEX_REBUILD_GROWTH
            return self._build_vector_index(images, kind, rows) if enough and grown else None
        if enough:
            return self._build_vector_index(images, kind, rows)
        if listed is not None:
            images.drop_index(listed.name)
            return (f"dropped the {label(listed.index_type)} vector index: --vector-index {kind} searches exactly "
                    f"below {min_rows(kind)} photos")
        return None

    def _build_vector_index(self, images, kind: str, rows: int) -> str:
        dim = images.schema.field("vector").type.list_size
        images.create_index("vector", config=index_config(kind, dim, rows), replace=True)
        self.write_meta({VECTOR_INDEX_ROWS: rows})
        listed = vector_index_of(images)
        return (f"built vector index ({label(listed.index_type)}, cosine, {bytes_per_photo(listed, dim)} bytes/photo) "
                f"over {rows} images")

    def vector_index_note(self) -> str | None:
        """Why the chosen vector index is not built yet, in one line; None when nothing is waiting."""
        images = self.table(IMAGES)
        return pending_note(chosen_kind(self.meta()), images.count_rows(), vector_index_of(images) is not None)

    # ----- the readers (`glance eval`) -----------------------------------------------------------------------
    def built_rows(self) -> int:
        """Photos the vector index of this snapshot was (re)built over, which set its partitions."""
        return int(self.current_meta().get(VECTOR_INDEX_ROWS) or 0)

    def vector_index_info(self, limit: int) -> dict | None:
        """The photos' vector index in this snapshot: kind, bytes per photo, size on disk, and how a search for
        `limit` photos is tuned; None without one."""
        listed = vector_index_of(self.images)
        if listed is None:
            return None
        return {"kind": kind_name(listed.index_type), "bytes_per_photo": bytes_per_photo(listed, self.vector_dim()),
                "index_bytes": int(getattr(listed, "size_bytes", 0) or 0), "nprobes": nprobes(self.built_rows()),
                "refine_factor": refine_factor(limit) if quantized(listed.index_type) else None}

    def top_photos(self, vectors: np.ndarray, limit: int, exact: bool = False) -> pa.Table:
        """query_index, id, score of the `limit` best photos for each query vector, in one LanceDB search: exact
        (every vector scored), or through the vector index tuned as search tunes it, whatever the table's size."""
        query = self.images.search(np.asarray(vectors, np.float32)).distance_type("cosine")
        index = None if exact else self.vector_index(IMAGES)
        query = query.bypass_vector_index() if index is None else tune(query, index, limit, self.built_rows())
        rows = query.limit(limit).select(["id", "_distance"]).to_arrow()
        if "query_index" not in rows.column_names:  # one query: LanceDB leaves the column out
            rows = rows.append_column("query_index", pa.array(np.zeros(rows.num_rows, np.int32)))
        scores = pa.array(1.0 - rows.column("_distance").to_numpy(zero_copy_only=False), pa.float32())
        return rows.select(["query_index", "id"]).append_column("score", scores)

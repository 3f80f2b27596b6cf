"""Arrow rows for the images and captions tables (schema: store/schema.py)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from store import caption_id, captions_schema, images_schema


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def vector_column(vectors: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def images_table(rows: list[dict], vectors: np.ndarray, dim: int) -> pa.Table:
    """`rows` hold every images column but the vector, in the same order as `vectors`."""
    schema = images_schema(dim)
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in schema if f.name != "vector"}
    columns["vector"] = vector_column(vectors, dim)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def caption(image_id: str, source: str, text: str) -> dict:
    return {"id": caption_id(image_id, source, text), "image_id": image_id, "text": text, "source": source}


def captions_table(rows: list[dict], vectors: np.ndarray, dim: int) -> pa.Table:
    schema = captions_schema(dim)
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in schema if f.name != "vector"}
    columns["vector"] = vector_column(vectors.reshape(len(rows), dim) if len(rows) else np.zeros((0, dim)), dim)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)

"""A Glance index for the serving benchmarks (bench/query_load.py, bench/cold_start.py): full-size models, cached.

The models are the full-size Nomic v1.5 architectures with random weights (models/synthetic.py), written once into
the bench cache (~/.cache/glance-bench) so that later runs find them on disk, as "models cached" means for a user;
speed does not depend on the weights. The index holds `rows` synthetic photo rows (random unit vectors, Glance's
images schema, bench/query_latency.py's filler metadata) recorded with those models.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

BENCH_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance-bench"
MODELS = BENCH_CACHE / "nomic-v1.5-full-random-v1"
DIM = 768


def full_size_models() -> tuple[Path, Path]:
    """(text folder, vision folder), written on the first call (~30 s, 0.9 GB) and found on disk after."""
    text_dir, vision_dir = MODELS / "models" / "nomic-embed-text-v1.5", MODELS / "models" / "nomic-embed-vision-v1.5"
    done = MODELS / "complete"
    if not done.exists():
        from bench.query_latency import write_models

        written_text, written_vision = write_models(MODELS)
        assert (written_text, written_vision) == (text_dir, vision_dir), (written_text, written_vision)
        done.write_text("ok\n")
    return text_dir, vision_dir


def build_index(db: Path, rows: int, seed: int = 0) -> Path:
    """An index of `rows` random photo vectors recorded with the full-size models; returns `db`."""
    import store
    from bench.query_latency import images_rows, write_meta

    text_dir, vision_dir = full_size_models()
    st = store.Store(db)
    st.create_tables(DIM)
    vectors = np.random.default_rng(seed).standard_normal((rows, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    st.table(store.IMAGES).add(images_rows(0, vectors, DIM))
    write_meta(st, text_dir, vision_dir)
    return db


def cpu_name() -> str:
    """The CPU model with the core count: figures depend on both."""
    from models.device import cpu_name as model_name

    return f"{model_name()} ({os.cpu_count()} CPUs)"

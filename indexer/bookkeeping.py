"""Which models an index is built with, and the refusal to mix vectors from different ones.

Models are resolved (files found, pair checked, size read from config.json) without loading any weights,
so a re-run over an unchanged library never pays for loading them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import store
from core.errors import UsageError
from models import PREPROCESS_VERSION, ModelSpec, resolve_pair
from models.dims import supported_dims
from store import StoreError


@dataclass(frozen=True)
class ModelChoice:
    vision_model: ModelSpec
    text_model: ModelSpec
    stored_dim: int | None = None  # a Matryoshka size the vectors are cut to (None: the model's full size)

    @property
    def vision(self) -> str:  # as recorded in meta: a Hub repo id, or an absolute folder path
        return self.vision_model.spec

    @property
    def text(self) -> str:
        return self.text_model.spec

    @property
    def version(self) -> str:
        return self.vision_model.version

    @property
    def dim(self) -> int:
        return self.stored_dim or self.vision_model.dim

    @property
    def vision_folder(self) -> Path:
        return self.vision_model.folder

    def meta(self) -> dict:
        return {store.VISION_MODEL: self.vision, store.TEXT_MODEL: self.text, store.MODEL_VERSION: self.version,
                store.DIM: self.dim, store.PREPROCESS_VERSION_KEY: PREPROCESS_VERSION}

    def describe(self) -> str:
        return f"{self.vision} + {self.text} ({self.version}, dim {self.dim}, preprocessing v{PREPROCESS_VERSION})"


def choose_models(meta: dict, vision: str | None, text: str | None, dim: int | None = None) -> ModelChoice:
    """Flags win; otherwise an existing index keeps its models (and its stored size); otherwise the default
    preset (Nomic v1.5) at full size."""
    if vision:  # a new vision model brings its own text model (a preset's, or the open_clip checkpoint itself)
        pair = resolve_pair(vision, text, fallback_text=meta.get(store.TEXT_MODEL))
    else:
        pair = resolve_pair(meta.get(store.VISION_MODEL), text or meta.get(store.TEXT_MODEL))
    same_models = [m.spec for m in pair] == [meta.get(store.VISION_MODEL), meta.get(store.TEXT_MODEL)]
    wanted = dim or (int(meta[store.DIM]) if same_models and meta.get(store.DIM) else None)
    return ModelChoice(*pair, stored_dim=_checked_dim(wanted, pair[1]) if wanted else None)


def _checked_dim(dim: int, text: ModelSpec) -> int | None:
    allowed = supported_dims(text.dim, text.version)
    if dim not in allowed:
        raise UsageError(f"--dim {dim}: {text.spec} embeds at " + ", ".join(map(str, allowed)) +
                         (" (Matryoshka sizes)" if len(allowed) > 1 else " only"))
    return None if dim == text.dim else dim


def check_compatible(meta: dict, has_rows: bool, choice: ModelChoice, db: Path) -> None:
    """Refuse to add vectors from other models (or other preprocessing) to an existing index."""
    if not has_rows:
        return  # a new or empty index takes any models
    if not meta.get(store.VISION_MODEL):
        raise StoreError(f"the index at {db} does not record which models built it; "
                         f"rebuild it with `glance index --reindex PATH --db {db}`")
    store.check_preprocessing(meta, PREPROCESS_VERSION, db)
    recorded = {key: meta.get(key) for key in store.MODEL_KEYS}
    wanted = choice.meta()
    different = [key for key in store.MODEL_KEYS if recorded[key] != wanted[key]]
    if different:
        was = ", ".join(f"{k}={recorded[k]}" for k in different)
        now = ", ".join(f"{k}={wanted[k]}" for k in different)
        raise StoreError(f"the index at {db} was built with {was}, not {now}; its vectors are not comparable. "
                         f"Embed every photo again with them: `glance index --reindex PATH --db {db}`, or use another --db")

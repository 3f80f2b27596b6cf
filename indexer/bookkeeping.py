"""Which models an index is built with, and the refusal to mix vectors from different ones.

Models are resolved (files found, pair checked, size read from config.json) without loading any weights,
so a re-run over an unchanged library never pays for loading them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import store
from core.errors import UsageError
from models import DEFAULT_TEXT, DEFAULT_VISION, PREPROCESS_VERSION, hub
from models.encoders import check_pair
from store import StoreError


@dataclass(frozen=True)
class ModelChoice:
    vision: str  # as recorded in meta: a Hub repo id, or an absolute folder path
    text: str
    version: str
    dim: int
    vision_folder: Path
    text_folder: Path

    def meta(self) -> dict:
        return {store.VISION_MODEL: self.vision, store.TEXT_MODEL: self.text, store.MODEL_VERSION: self.version,
                store.DIM: self.dim, store.PREPROCESS_VERSION_KEY: PREPROCESS_VERSION}

    def describe(self) -> str:
        return f"{self.vision} + {self.text} ({self.version}, dim {self.dim}, preprocessing v{PREPROCESS_VERSION})"


def spec_as_recorded(spec: str) -> str:
    """A local folder is recorded by its absolute path (the search engine may run from another directory)."""
    local = Path(spec).expanduser()
    return str(local.resolve()) if local.is_dir() else spec


def choose_models(meta: dict, vision: str | None, text: str | None) -> ModelChoice:
    """Flags win; otherwise an existing index keeps its models; otherwise Nomic's v1.5 pair."""
    vision = spec_as_recorded(vision or meta.get(store.VISION_MODEL) or DEFAULT_VISION)
    text = spec_as_recorded(text or meta.get(store.TEXT_MODEL) or DEFAULT_TEXT)
    vision_folder = hub.resolve(vision, hub.VISION_FILES, flag="--vision-model")
    text_folder = hub.resolve(text, hub.TEXT_FILES, hub.TEXT_OPTIONAL_FILES, flag="--text-model")
    version = hub.model_version(vision, vision_folder)
    check_pair(vision, version, text, hub.model_version(text, text_folder))
    dims = {name: int(json.loads((folder / "config.json").read_text())["n_embd"])
            for name, folder in (("vision", vision_folder), ("text", text_folder))}
    if dims["vision"] != dims["text"]:
        raise UsageError(f"vision model {vision} embeds into {dims['vision']} dimensions but text model {text} "
                         f"into {dims['text']}: they cannot share an index")
    return ModelChoice(vision, text, version, dims["vision"], vision_folder, text_folder)


def check_compatible(meta: dict, has_rows: bool, choice: ModelChoice, db: Path) -> None:
    """Refuse to add vectors from other models (or other preprocessing) to an existing index."""
    if not has_rows:
        return  # a new or empty index takes any models
    if not meta.get(store.VISION_MODEL):
        raise StoreError(f"the index at {db} does not record which models built it; "
                         f"rebuild it with --reindex")
    recorded = {key: meta.get(key) for key in store.MODEL_KEYS}
    wanted = choice.meta()
    different = [key for key in store.MODEL_KEYS if recorded[key] != wanted[key]]
    if different:
        was = ", ".join(f"{k}={recorded[k]}" for k in different)
        now = ", ".join(f"{k}={wanted[k]}" for k in different)
        raise StoreError(f"the index at {db} was built with {was}, not {now}; its vectors are not comparable. "
                         f"Add --reindex to embed every photo again with the new models, or use another --db")

"""Which encoders a search may use: the pair recorded in the index, or overrides proven to match it.

Query vectors are only comparable with the stored ones when they come from the same model, so:
* with no override, the models recorded in the index's meta are loaded (a Hub id or a folder);
* an override (`--vision-model`, `--text-model`) must be the same release (v1 / v1.5) with at least the
  recorded dimension, and, when it is not literally the recorded model, it must reproduce the index's
  own vectors: the vision model re-embeds a few stored thumbnails, the text model a few stored caption
  texts, and the median cosine to the stored vectors must reach MIN_SAME_MODEL_COSINE. (A local copy of
  the recorded Hub model passes; another model, even with the same folder name, does not.) With no
  thumbnails or captions to compare, the release names must be equal instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import UsageError
from core.images import THUMBNAIL_MAX_PIXELS, ImageRefused, open_image
from models import PREPROCESS_VERSION, ModelSpec, check_dim, check_pair, resolve
from store import StoreError, check_preprocessing

# Same model: thumbnail vs original ~0.9+ (JPEG, resampling), caption re-embedded ~1.0.
# Different models: unrelated spaces, ~0 +- 0.2.
MIN_SAME_MODEL_COSINE = 0.5
REQUIRED_META = ("vision_model", "text_model", "dim")


@dataclass(frozen=True)
class IndexModels:
    """What the index records about the models that made its vectors."""
    vision: str
    text: str
    version: str
    dim: int


@dataclass(frozen=True)
class ChosenModel:
    model: ModelSpec  # what to load
    overridden: bool  # an override that is not literally the recorded model

    @property
    def spec(self) -> str:
        return self.model.spec

    @property
    def version(self) -> str:
        return self.model.version


def recorded_models(meta: dict, db_path: Path) -> IndexModels:
    check_preprocessing(meta, PREPROCESS_VERSION, db_path)
    missing = [key for key in REQUIRED_META if not meta.get(key)]
    if missing:
        raise StoreError(f"the index at {db_path} does not record its models ({', '.join(missing)} missing); "
                         f"rebuild it with `glance index --reindex PATH --db {db_path}`")
    return IndexModels(str(meta["vision_model"]), str(meta["text_model"]),
                       str(meta.get("model_version") or ""), int(meta["dim"]))


def choose(kind: str, recorded: str, override: str | None, index_version: str, db_path: Path) -> ChosenModel:
    """Resolve the model to load for `kind` ('vision' or 'text'); refuses another release up front."""
    model = resolve(override or recorded, kind)
    if index_version and model.version != index_version:
        raise StoreError(f"the index at {db_path} was built with Nomic Embed {index_version} ({recorded}); "
                         f"{model.flag} {model.spec} is {model.version}, whose vectors are not comparable. Rebuild "
                         f"the index with that model, or drop {model.flag}")
    overridden = bool(override) and not _same_spec(override, recorded, model.folder)
    return ChosenModel(model, overridden)


def _same_spec(override: str, recorded: str, override_folder: Path) -> bool:
    if override == recorded:
        return True
    recorded_path = Path(recorded).expanduser()
    return recorded_path.is_dir() and recorded_path.resolve() == override_folder


def check_pair_and_dim(vision: ChosenModel, text: ChosenModel, text_dim: int, recorded: IndexModels,
                       db_path: Path) -> None:
    check_pair(vision.model, text.model)
    try:
        check_dim(recorded.dim, text_dim, text.version)
    except ValueError:
        raise StoreError(f"the index at {db_path} holds {recorded.dim}-d vectors, which text model {text.spec} "
                         f"({text_dim}-d, {text.version}) cannot produce; use the model the index was built with "
                         f"({recorded.text})") from None


def verify(kind: str, chosen: ChosenModel, recorded: str, embedded: np.ndarray | None, stored: np.ndarray | None,
           db_path: Path) -> None:
    """Refuse an overriding model whose vectors for the index's own samples differ from the stored ones."""
    flag = f"--{kind}-model"
    if embedded is None or stored is None or len(stored) == 0:
        if release_name(chosen.spec) != release_name(recorded):
            raise StoreError(f"the index at {db_path} was built with {kind} model {recorded}, not {chosen.spec}, "
                             f"and has no samples to prove they are the same; drop {flag} or rebuild the index")
        return
    cosine = float(np.median(np.sum(_unit(embedded) * _unit(stored), axis=1)))
    if cosine < MIN_SAME_MODEL_COSINE:
        raise StoreError(f"{flag} {chosen.spec} is not the model the index at {db_path} was built with ({recorded}): "
                         f"its vectors for {len(stored)} indexed samples differ (median cosine {cosine:.2f}). "
                         f"Drop {flag}, or rebuild the index with that model")


def thumbnails_as_images(thumbs: list[bytes]) -> list[Image.Image]:
    images = []
    for data in thumbs:
        try:
            images.append(open_image(data, name="a thumbnail", max_pixels=THUMBNAIL_MAX_PIXELS))
        except ImageRefused:  # a damaged thumbnail is no evidence either way
            continue
    return images


def release_name(spec: str) -> str:
    """`nomic-ai/nomic-embed-vision-v1.5`, `/models/nomic-embed-vision-v1.5` and a Hub cache snapshot
    folder all give `nomic-embed-vision-v1.5`."""
    text = str(spec).rstrip("/")
    cached = re.search(r"models--[^/]+--([^/]+)/snapshots/", text)
    if cached:
        return cached.group(1).lower()
    return text.rsplit("/", 1)[-1].lower()


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_precision(precision: str) -> str:
    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return precision

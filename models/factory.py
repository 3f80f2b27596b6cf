"""The one model factory: a model spec (a preset name, a Hub id or a local folder) -> its files -> encoders.

Every part of Glance that needs a model comes through here: the indexer, search, the page and `glance embed`.
`resolve` finds the files and reads the config without loading any weights (a re-run over an unchanged library
never pays for a model); `load` and `load_pair` build the encoders.

    pair = resolve_pair("nomic-v1.5")                            # a preset names both models
    pair = resolve_pair("nomic-ai/nomic-embed-vision-v1.5", "/models/nomic-embed-text-v1.5")
    vision, text = load_pair(*pair, precision="auto")
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import hub
from .errors import MismatchedModels

VISION, TEXT = "vision", "text"
NOMIC, OPEN_CLIP = "nomic", "open_clip"


@dataclass(frozen=True)
class Preset:
    """A named pair of models that share one space, with what a user weighs when choosing (`glance models`)."""
    family: str
    vision: str  # Hub repo id
    text: str  # Hub repo id (for open_clip the same repo: one checkpoint holds both towers)
    licence: str
    languages: str
    dim: int
    gflop_per_image: float  # vision tower at its input size (multiply-adds x 2)
    download_mb: int


PRESETS = {
    "nomic-v1.5": Preset(NOMIC, hub.DEFAULT_VISION, hub.DEFAULT_TEXT, "vision CC-BY-NC-4.0, text Apache-2.0",
                         "English", 768, 35.6, 919),
    "nomic-v1": Preset(NOMIC, "nomic-ai/nomic-embed-vision-v1", "nomic-ai/nomic-embed-text-v1",
                       "vision CC-BY-NC-4.0, text Apache-2.0", "English", 768, 35.6, 919),
}
DEFAULT_PRESET = "nomic-v1.5"
FILES = {VISION: (hub.VISION_FILES, ()), TEXT: (hub.TEXT_FILES, hub.TEXT_OPTIONAL_FILES)}


@dataclass(frozen=True)
class ModelSpec:
    """A model whose files are found, nothing loaded yet."""
    kind: str  # VISION or TEXT
    spec: str  # as an index records it: a Hub repo id, or an absolute folder path
    folder: Path
    version: str  # the release, "v1.5" or "v1": models pair only within one
    dim: int  # the embedding size its config declares

    @property
    def flag(self) -> str:
        return f"--{self.kind}-model"


def presets() -> list[dict]:
    """Every preset as `glance models` shows it, with whether both models are complete in the local cache."""
    return [{"name": name, "family": p.family, "vision": p.vision, "text": p.text, "licence": p.licence,
             "languages": p.languages, "dim": p.dim, "gflop_per_image": p.gflop_per_image,
             "download_mb": p.download_mb, "cached": hub.is_cached(p.vision, FILES[VISION][0])
             and hub.is_cached(p.text, FILES[TEXT][0])} for name, p in PRESETS.items()]


def resolve(spec: str, kind: str) -> ModelSpec:
    """The files of one model, for a preset name, a Hub id (cached, else downloaded once) or a local folder."""
    if spec in PRESETS:
        spec = PRESETS[spec].vision if kind == VISION else PRESETS[spec].text
    local = Path(spec).expanduser()
    recorded = str(local.resolve()) if local.is_dir() else spec  # the engine may run from another directory
    required, optional = FILES[kind]
    folder = hub.resolve(recorded, required, optional, flag=f"--{kind}-model")
    config = json.loads((folder / "config.json").read_text())
    return ModelSpec(kind, recorded, folder, hub.model_version(recorded, folder), int(config["n_embd"]))


def resolve_pair(vision: str | None = None, text: str | None = None) -> tuple[ModelSpec, ModelSpec]:
    """Both models, checked to share one space: a preset name for `vision` alone names the pair."""
    vision = vision or DEFAULT_PRESET
    if text is None and vision in PRESETS:
        text = vision
    pair = resolve(vision, VISION), resolve(text or PRESETS[DEFAULT_PRESET].text, TEXT)
    check_pair(*pair)
    return pair


def check_pair(vision: ModelSpec, text: ModelSpec) -> None:
    if vision.version != text.version:
        raise MismatchedModels(
            f"vision model {vision.spec} is {vision.version} but text model {text.spec} is {text.version}: "
            f"their embeddings are not comparable. Pair vision v1.5 with text v1.5, and v1 with v1")
    if vision.dim != text.dim:
        raise MismatchedModels(f"vision model {vision.spec} embeds into {vision.dim} dimensions but text model "
                               f"{text.spec} into {text.dim}: they cannot share an index")


def preprocess_of(model: ModelSpec):
    """The vision model's preprocessing, as the indexer applies it in its decoding threads."""
    from .preprocess import Preprocess

    return Preprocess.from_folder(model.folder)


def vision_shape(model: ModelSpec) -> tuple[int, int, int]:
    """(hidden size, attention heads, patch size) of a vision model: what its activations cost per image."""
    config = json.loads((model.folder / "config.json").read_text())
    return int(config["n_embd"]), int(config["n_head"]), int(config.get("patch_size", 16))


def load(model: ModelSpec, precision: str = "auto"):
    """The encoder for a resolved model: a VisionEncoder or a TextEmbedder."""
    from .encoders import TextEmbedder, VisionEncoder  # torch: only once a model is really needed

    return VisionEncoder(model, precision) if model.kind == VISION else TextEmbedder(model, precision)


def load_pair(vision: ModelSpec | str | None = None, text: ModelSpec | str | None = None, precision: str = "auto",
              threads: int | None = None):
    """(VisionEncoder, TextEmbedder); a pair from different releases is refused before anything heavy loads."""
    from .encoders import set_threads

    if not isinstance(vision, ModelSpec) or not isinstance(text, ModelSpec):
        vision, text = resolve_pair(_spec_text(vision), _spec_text(text))
    check_pair(vision, text)
    set_threads(threads)
    return load(vision, precision), load(text, precision)


def _spec_text(model: ModelSpec | str | None) -> str | None:
    return model.spec if isinstance(model, ModelSpec) else model

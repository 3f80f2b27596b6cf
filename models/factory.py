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

from . import hftext, hub
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
    # Commercial use: OpenCLIP's LAION and DataComp ViT-B-32 (MIT) and SigLIP (Apache-2.0), a quarter of the cost.
    "clip-vit-b-32": Preset(OPEN_CLIP, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                            "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "MIT", "English", 512, 8.8, 605),
    "clip-vit-b-32-256": Preset(OPEN_CLIP, "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K",
                                "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K", "MIT", "English", 512, 11.5, 605),
    "siglip-vit-b-16": Preset(OPEN_CLIP, "timm/ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP", "Apache-2.0", "English",
                              768, 35.1, 813),
    # Multilingual: OpenCLIP's ViT-B-32 with an xlm-roberta-base text tower, whose config and tokenizer come from
    # FacebookAI/xlm-roberta-base (models/hftext.py); the download counts both repos.
    "mclip-xlmr-b-32": Preset(OPEN_CLIP, "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
                              "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "MIT", "multilingual (~100)",
                              512, 8.8, 1483),
}
DEFAULT_PRESET = "nomic-v1.5"
FILES = {VISION: (hub.VISION_FILES, ()), TEXT: (hub.TEXT_FILES, hub.TEXT_OPTIONAL_FILES)}
OPEN_CLIP_CONFIG = "open_clip_config.json"
# Safetensors only: a repo with pickled weights alone is refused (models/openclip.py names them).
OPEN_CLIP_FILES = (OPEN_CLIP_CONFIG, "open_clip_model.safetensors")
OPEN_CLIP_OPTIONAL = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model",
                      "vocab.json", "merges.txt")


@dataclass(frozen=True)
class ModelSpec:
    """A model whose files are found, nothing loaded yet."""
    kind: str  # VISION or TEXT
    spec: str  # as an index records it: a Hub repo id, or an absolute folder path
    folder: Path
    version: str  # the release ("v1.5", "v1", "open_clip:ViT-B-32"): models pair only within one
    dim: int  # the embedding size its config declares
    family: str = NOMIC  # NOMIC: two models, one space; OPEN_CLIP: one checkpoint holds both towers

    @property
    def flag(self) -> str:
        return f"--{self.kind}-model"


def presets() -> list[dict]:
    """Every preset as `glance models` shows it, with whether both models are complete in the local cache."""
    return [{"name": name, "family": p.family, "vision": p.vision, "text": p.text, "licence": p.licence,
             "languages": p.languages, "dim": p.dim, "gflop_per_image": p.gflop_per_image,
             "download_mb": p.download_mb, "cached": _cached(p)} for name, p in PRESETS.items()]


def _cached(preset: Preset) -> bool:
    if preset.family == OPEN_CLIP:  # with a transformers text tower's config and tokenizer, if it has one
        return hub.is_cached(preset.vision, OPEN_CLIP_FILES) and hftext.is_cached(preset.vision)
    return hub.is_cached(preset.vision, FILES[VISION][0]) and hub.is_cached(preset.text, FILES[TEXT][0])


def resolve(spec: str, kind: str) -> ModelSpec:
    """The files of one model, for a preset name, a Hub id (cached, else downloaded once) or a local folder."""
    if spec in PRESETS:
        spec = PRESETS[spec].vision if kind == VISION else PRESETS[spec].text
    local = Path(spec).expanduser()
    recorded = str(local.resolve()) if local.is_dir() else spec  # the engine may run from another directory
    if family_of(recorded) == OPEN_CLIP:
        from .openclip import model_spec  # noqa: PLC0415 - torch; only for this family

        folder = hub.resolve(recorded, OPEN_CLIP_FILES, OPEN_CLIP_OPTIONAL, flag=f"--{kind}-model")
        return model_spec(folder, kind, recorded)
    required, optional = FILES[kind]
    folder = hub.resolve(recorded, required, optional, flag=f"--{kind}-model")
    config = json.loads((folder / "config.json").read_text())
    return ModelSpec(kind, recorded, folder, hub.model_version(recorded, folder), int(config["n_embd"]))


def family_of(spec: str) -> str:
    """OPEN_CLIP for a folder or Hub repo in open_clip's layout (a preset says so, or its config file is in the
    folder, the cache or, online, the repo); NOMIC otherwise."""
    preset = next((p for p in PRESETS.values() if spec in (p.vision, p.text)), None)
    if preset:
        return preset.family
    local = Path(spec)
    if local.is_dir():
        return OPEN_CLIP if (local / OPEN_CLIP_CONFIG).is_file() else NOMIC
    return OPEN_CLIP if hub.has_file(spec, OPEN_CLIP_CONFIG) else NOMIC


def resolve_pair(vision: str | None = None, text: str | None = None,
                 fallback_text: str | None = None) -> tuple[ModelSpec, ModelSpec]:
    """Both models, checked to share one space. Without `text`: a preset names its own, an open_clip checkpoint
    is its own text model, and a Nomic vision model pairs with `fallback_text` (an index's record), else the
    default preset's."""
    vision = vision or DEFAULT_PRESET
    vision_model = resolve(vision, VISION)
    if text is None:
        if vision in PRESETS:
            text = PRESETS[vision].text
        elif vision_model.family == OPEN_CLIP:
            text = vision_model.spec
        else:
            text = fallback_text or PRESETS[DEFAULT_PRESET].text
    pair = vision_model, resolve(text, TEXT)
    check_pair(*pair)
    return pair


def check_pair(vision: ModelSpec, text: ModelSpec) -> None:
    if OPEN_CLIP in (vision.family, text.family) and vision.folder != text.folder:
        raise MismatchedModels(f"an open_clip checkpoint holds both towers: vision model {vision.spec} and text "
                               f"model {text.spec} are not one checkpoint, so their embeddings are not comparable. "
                               f"Give just --vision-model {vision.spec}")
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

    if model.family == OPEN_CLIP:
        return Preprocess.from_open_clip(_open_clip_config(model)["preprocess_cfg"])
    return Preprocess.from_folder(model.folder)


def vision_shape(model: ModelSpec) -> tuple[int, int, int]:
    """(hidden size, attention heads, patch size) of a vision model: what its activations cost per image."""
    if model.family == OPEN_CLIP:
        vision = _open_clip_config(model)["model_cfg"]["vision_cfg"]
        width = int(vision.get("width", 768))  # timm towers name no width: ViT-B's is the common case
        return width, max(1, width // int(vision.get("head_width", 64))), int(vision.get("patch_size", 16))
    config = json.loads((model.folder / "config.json").read_text())
    return int(config["n_embd"]), int(config["n_head"]), int(config.get("patch_size", 16))


def _open_clip_config(model: ModelSpec) -> dict:
    config = json.loads((model.folder / OPEN_CLIP_CONFIG).read_text())
    return {"model_cfg": config["model_cfg"], "preprocess_cfg": config.get("preprocess_cfg") or {}}


def load(model: ModelSpec, precision: str = "auto", device: str = "cpu"):
    """The encoder for a resolved model: a VisionEncoder or a TextEmbedder (or their open_clip peers).
    `device` (models/device.py) places vision towers; text towers embed a few words at a time and stay on the CPU."""
    if model.family == OPEN_CLIP:
        from .openclip import OpenClipText, OpenClipVision

        if model.kind == VISION:
            return OpenClipVision(model, precision, device=device)
        return OpenClipText(model, precision)
    from .encoders import TextEmbedder, VisionEncoder  # torch: only once a model is really needed

    return VisionEncoder(model, precision, device) if model.kind == VISION else TextEmbedder(model, precision)


def load_pair(vision: ModelSpec | str | None = None, text: ModelSpec | str | None = None, precision: str = "auto",
              threads: int | None = None):
    """(VisionEncoder, TextEmbedder); a pair from different releases is refused before anything heavy loads."""
    from .encoders import set_threads

    if not isinstance(vision, ModelSpec) or not isinstance(text, ModelSpec):
        vision, text = resolve_pair(_spec_text(vision), _spec_text(text))
    check_pair(vision, text)
    set_threads(threads)
    if vision.family == OPEN_CLIP:  # one checkpoint: both towers share one module, read once
        from .openclip import OpenClipText, OpenClipVision

        vision_encoder = OpenClipVision(vision, precision)
        return vision_encoder, OpenClipText(text, precision, module=vision_encoder.model)
    return load(vision, precision), load(text, precision)


def _spec_text(model: ModelSpec | str | None) -> str | None:
    return model.spec if isinstance(model, ModelSpec) else model


# ----- caption models: a second, text-to-text space for captions (models/captioning.py) ----------------------
@dataclass(frozen=True)
class CaptionPreset:
    repo: str
    licence: str
    languages: str
    dim: int
    download_mb: int


CAPTION_PRESETS = {
    "minilm": CaptionPreset("sentence-transformers/all-MiniLM-L6-v2", "Apache-2.0", "English", 384, 91),
    "mpnet": CaptionPreset("sentence-transformers/all-mpnet-base-v2", "Apache-2.0", "English", 768, 438),
    # Dense vectors only: BGE-M3's sparse and ColBERT heads ship as pickles (sparse_linear.pt, colbert_linear.pt).
    "bge-m3": CaptionPreset("BAAI/bge-m3", "MIT", "multilingual (100+)", 1024, 2271),
}
CAPTION_FILES = ("modules.json", "config.json", "model.safetensors")
CAPTION_OPTIONAL = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "sentencepiece.bpe.model", "sentence_bert_config.json", "config_sentence_transformers.json",
                    "1_Pooling/config.json", "2_Dense/config.json", "2_Dense/model.safetensors")
# Caption models known to need code from their repository: refused by name, before anything is downloaded.
REMOTE_CODE_MODELS = {
    "Alibaba-NLP/gte-multilingual-base": "its architecture (NewModel) exists only as Python code in the model's "
                                         "repository, loaded with trust_remote_code",
}


def resolve_caption_model(spec: str):
    """A caption model's files (preset name, Hub id or folder), checked safe to load, nothing loaded yet."""
    from .captioning import CaptionModelSpec, declared_dim, refuse_pickled

    if spec in CAPTION_PRESETS:
        spec = CAPTION_PRESETS[spec].repo
    refused = next((why for repo, why in REMOTE_CODE_MODELS.items() if spec.rstrip("/").endswith(repo)), None)
    if refused:
        raise MismatchedModels(f"caption model {spec} cannot be used: {refused}, and Glance never runs remote "
                               f"code. Try --caption-model bge-m3 for multilingual captions")
    local = Path(spec).expanduser()
    recorded = str(local.resolve()) if local.is_dir() else spec
    if local.is_dir():
        refuse_pickled(local)
    folder = hub.resolve(recorded, CAPTION_FILES, CAPTION_OPTIONAL, flag="--caption-model")
    return CaptionModelSpec(recorded, folder, declared_dim(folder))


def load_caption_model(spec):
    """The CaptionEncoder for a resolved caption model (or a spec, resolved first)."""
    from .captioning import CaptionEncoder, CaptionModelSpec

    return CaptionEncoder(spec if isinstance(spec, CaptionModelSpec) else resolve_caption_model(spec))


def caption_presets() -> list[dict]:
    """Every caption-model preset as `glance models` shows it."""
    return [{"name": name, "repo": p.repo, "licence": p.licence, "languages": p.languages, "dim": p.dim,
             "download_mb": p.download_mb, "cached": hub.is_cached(p.repo, CAPTION_FILES)}
            for name, p in CAPTION_PRESETS.items()]

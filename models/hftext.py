"""The transformers text tower of an open_clip model (the multilingual CLIP's xlm-roberta-base): its config and
tokenizer as local folders, so it builds offline.

open_clip builds such a tower from `AutoConfig.from_pretrained(text_cfg["hf_model_name"])` and tokenizes with
`AutoTokenizer.from_pretrained(text_cfg["hf_tokenizer_name"])`: Hub names, which transformers would look up online.
Glance resolves each name to a folder first and gives open_clip that folder:

    a path: "/models/xlm-roberta-base", or "./xlm-roberta-base" from the model folder  -> that folder
    a Hub repo: "xlm-roberta-base" (now FacebookAI/xlm-roberta-base)  -> its cached files, downloaded once

Only the config and tokenizer files are fetched, never that repo's weights: the open_clip checkpoint holds the
tower's own. Both are plain files that transformers parses; one that asks for remote code is refused.
No torch here: `glance models` asks `is_cached` without loading anything heavy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import hub
from .errors import CheckpointMismatch, ModelUnavailable

MODEL_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json",)
# config.json names the tokenizer class when tokenizer_config.json does not (xlm-roberta-base has none).
TOKENIZER_OPTIONAL = ("config.json", "tokenizer_config.json", "special_tokens_map.json")
# open_clip's configs use the Hub's old owner-less names; the Hub has since moved these repos under an owner.
MOVED_REPOS = {"xlm-roberta-base": "FacebookAI/xlm-roberta-base", "xlm-roberta-large": "FacebookAI/xlm-roberta-large",
               "roberta-base": "FacebookAI/roberta-base"}
OPEN_CLIP_CONFIG = "open_clip_config.json"


@dataclass(frozen=True)
class HFText:
    """Where an HF text tower's files are, and the text_cfg that makes open_clip build it from them."""
    text_cfg: dict  # hf_model_name / hf_tokenizer_name replaced by local folders; no base weights fetched
    tokenizer: Path | None  # None: open_clip tokenizes with CLIP's own BPE (no hf_tokenizer_name)


def resolve(text_cfg: dict, folder: Path) -> HFText | None:
    """The local files of the HF text tower that `text_cfg` names (None for open_clip's own text transformer);
    a Hub repo not yet cached is downloaded (config and tokenizer only)."""
    if not text_cfg.get("hf_model_name"):
        return None
    model = _folder(text_cfg, "hf_model_name", folder, MODEL_FILES, ())
    tokenizer = (_folder(text_cfg, "hf_tokenizer_name", folder, TOKENIZER_FILES, TOKENIZER_OPTIONAL)
                 if text_cfg.get("hf_tokenizer_name") else None)
    local = {"hf_model_name": str(model), "hf_model_pretrained": False}  # the checkpoint brings the weights
    if tokenizer:
        local["hf_tokenizer_name"] = str(tokenizer)
    return HFText({**text_cfg, **local}, tokenizer)


def source(name: str, folder: Path) -> str:
    """A path name as a folder (a relative one from the model folder); a Hub name as its current repo id."""
    if name.startswith((".", "/", "~")):
        return str(folder / Path(name).expanduser())  # an absolute path stays as it is
    return MOVED_REPOS.get(name, name)


def _folder(text_cfg: dict, key: str, folder: Path, files: tuple[str, ...], optional: tuple[str, ...]) -> Path:
    name = text_cfg[key]
    config = folder / OPEN_CLIP_CONFIG
    try:
        found = hub.resolve(source(name, folder), files, optional,
                            instead=f"name that folder as text_cfg {key} in {config}")
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"{config} builds its text tower from {name}, but {exc}") from None
    for file in ("config.json", "tokenizer_config.json"):
        if "auto_map" in _json(found / file):
            raise CheckpointMismatch(f"{found / file} asks for remote code (auto_map), which Glance never runs")
    return found


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointMismatch(f"{path} cannot be read as JSON ({exc})") from None
    return raw if isinstance(raw, dict) else {}


def is_cached(repo_id: str) -> bool:
    """Whether the HF text tower that a cached open_clip Hub repo names (if it has one) is local too."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, OPEN_CLIP_CONFIG) if hub.is_cached(repo_id, (OPEN_CLIP_CONFIG,)) else None
    if not isinstance(config, str):
        return False
    text_cfg = (_json(Path(config)).get("model_cfg") or {}).get("text_cfg") or {}
    if not text_cfg.get("hf_model_name"):
        return True  # open_clip's own text transformer, or a tokenizer from the repo itself (SigLIP)
    needs = [(text_cfg["hf_model_name"], MODEL_FILES), (text_cfg.get("hf_tokenizer_name"), TOKENIZER_FILES)]
    return all(_available(source(name, Path(config).parent), files) for name, files in needs if name)


def _available(spec: str, files: tuple[str, ...]) -> bool:
    if Path(spec).is_absolute():
        return all((Path(spec) / name).is_file() for name in files)
    return hub.is_cached(spec, files)

"""Where model files come from: a local folder, or the Hugging Face Hub cache (downloading on first use)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelUnavailable

DEFAULT_VISION = "nomic-ai/nomic-embed-vision-v1.5"
DEFAULT_TEXT = "nomic-ai/nomic-embed-text-v1.5"

VISION_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
TEXT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
TEXT_OPTIONAL_FILES = ("special_tokens_map.json", "vocab.txt")


def resolve(spec: str, files: tuple[str, ...], optional: tuple[str, ...] = (), flag: str = "--model") -> Path:
    """Return a folder holding `files` for a Hub repo id or a local folder; never loads anything."""
    local = Path(spec).expanduser()
    if local.is_dir():
        missing = [f for f in files if not (local / f).is_file()]
        if missing:
            raise ModelUnavailable(f"model folder {local} lacks {', '.join(missing)}")
        return local.resolve()
    if spec.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        raise ModelUnavailable(f"no model folder at {spec!r} and it is not a Hugging Face repo id (owner/name)")
    return _from_hub(spec, files, optional, flag)


def _from_hub(repo_id: str, files: tuple[str, ...], optional: tuple[str, ...], flag: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    folder = None
    for name in files + optional:
        try:
            folder = Path(hf_hub_download(repo_id, name)).parent
        except Exception as exc:  # offline, not cached, no network, 404 ...
            if name in optional:
                continue
            mode = "offline mode is on (HF_HUB_OFFLINE=1)" if HF_HUB_OFFLINE else f"the Hub could not be reached ({type(exc).__name__})"
            raise ModelUnavailable(
                f"model {repo_id} is not in the Hugging Face cache ({HF_HUB_CACHE}) and {mode}; "
                f"it needs {', '.join(files)}. Run once with network to cache it, or download those files "
                f"into a folder and pass it: {flag} /path/to/folder"
            ) from None
    assert folder is not None
    return folder


def model_version(spec: str, folder: Path) -> str:
    """'v1.5' or 'v1', read from the repo id, folder path or model card; v1.5 when nothing says."""
    for text in (spec, str(folder), _card_title(folder)):
        text = text.lower()
        if re.search(r"v1[._]5", text):
            return "v1.5"
        if re.search(r"v1(?![\d._])", text):
            return "v1"
    return "v1.5"


def _card_title(folder: Path) -> str:
    card = folder / "README.md"
    if not card.is_file():
        return ""
    head = card.read_text(errors="replace")[:2000]
    names = re.findall(r"nomic-embed-(?:text|vision)-v1(?:\.5)?", head)
    return names[0] if names else ""

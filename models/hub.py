"""Where model files come from: a local folder, or the Hugging Face Hub cache (downloading on first use)."""
from __future__ import annotations

import functools
import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelUnavailable

DEFAULT_VISION = "nomic-ai/nomic-embed-vision-v1.5"
DEFAULT_TEXT = "nomic-ai/nomic-embed-text-v1.5"

VISION_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
TEXT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
TEXT_OPTIONAL_FILES = ("special_tokens_map.json", "vocab.txt")


def resolve(spec: str, files: tuple[str, ...], optional: tuple[str, ...] = (), flag: str = "--model",
            instead: str | None = None) -> Path:
    """Return a folder holding `files` for a Hub repo id or a local folder; never loads anything.

    `instead`: how a user names a downloaded folder instead, when that is not `{flag} /path/to/folder`.
    """
    local = Path(spec).expanduser()
    if local.is_dir():
        missing = [f for f in files if not (local / f).is_file()]
        if missing:
            raise ModelUnavailable(f"model folder {local} lacks {', '.join(missing)}")
        return local.resolve()
    if spec.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        raise ModelUnavailable(f"no model folder at {spec!r} and it is not a Hugging Face repo id (owner/name)")
    return _from_hub(spec, files, optional, instead or f"pass it: {flag} /path/to/folder")


def _from_hub(repo_id: str, files: tuple[str, ...], optional: tuple[str, ...], instead: str) -> Path:
    """The cached snapshot when complete (no network at all); else download just these files once."""
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    def unavailable(why: str) -> ModelUnavailable:
        return ModelUnavailable(
            f"model {repo_id} is not in the Hugging Face cache ({HF_HUB_CACHE}) and {why}; it needs "
            f"{', '.join(files)}. Run once with network to cache it, or download those files into a folder "
            f"and {instead}")

    try:
        return _fetch(repo_id, files, optional, local_only=True)
    except FileNotFoundError:
        pass
    if HF_HUB_OFFLINE:
        raise unavailable("offline mode is on (HF_HUB_OFFLINE=1)")
    if not _hub_reachable():
        raise unavailable("the Hub cannot be reached (no network?)")
    try:
        return _fetch(repo_id, files, optional, local_only=False)
    except Exception as exc:  # 404, auth, connection dropped mid-way ...
        raise unavailable(f"the download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def _fetch(repo_id: str, files: tuple[str, ...], optional: tuple[str, ...], local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    folder = None
    quiet = logging.getLogger("huggingface_hub")
    level, quiet.level = quiet.level, logging.ERROR  # its retry chatter is not for our users
    try:
        for name in files + optional:
            try:
                path = Path(hf_hub_download(repo_id, name, local_files_only=local_only))
                folder = path.parents[len(Path(name).parts) - 1]  # names may lie in subfolders ("1_Pooling/...")
            except (LocalEntryNotFoundError, EntryNotFoundError):
                if name not in optional:
                    if local_only:
                        raise FileNotFoundError(name) from None
                    raise
    finally:
        quiet.level = level
    assert folder is not None
    return folder


def is_cached(repo_id: str, files: tuple[str, ...]) -> bool:
    """Whether every file is in the local Hub cache (nothing is downloaded or even asked for)."""
    from huggingface_hub import try_to_load_from_cache

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        return False  # not a repo id at all (a missing folder, say): resolve() explains that
    try:
        return all(isinstance(try_to_load_from_cache(repo_id, name), str) for name in files)
    except ValueError:  # huggingface_hub refuses odd ids ("a..b"): not in any cache either
        return False


def has_file(repo_id: str, name: str) -> bool:
    """Whether a Hub repo holds this file: from the cache, else (online) by fetching just that small file."""
    if is_cached(repo_id, (name,)):
        return True
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id) or not _hub_reachable():
        return False
    try:
        _fetch(repo_id, (name,), (), local_only=False)
        return True
    except Exception:  # noqa: BLE001 - not there (404), private, or the network dropped: then it is not this family
        return False


@functools.lru_cache(maxsize=1)  # asked at most once per process: the answer costs up to `timeout` offline
def _hub_reachable(timeout: float = 5.0) -> bool:
    from huggingface_hub.constants import ENDPOINT

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let the download try
    url = urlparse(ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


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

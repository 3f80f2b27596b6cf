"""Nomic Embed Vision/Text encoders for Glance (native PyTorch, no remote code, safetensors only).

The error types and Hub defaults import instantly; everything that needs torch loads on first use, so a
command-line tool can answer `--help` or report a bad flag without paying for torch.
"""
from importlib import import_module

from .errors import CheckpointMismatch, MismatchedModels, ModelUnavailable, UnsupportedDim
from .factory import (PRESETS, ModelSpec, check_pair, load, load_pair, preprocess_of, resolve, resolve_pair,
                      vision_shape)
from .hub import DEFAULT_TEXT, DEFAULT_VISION

_LAZY = {
    "VisionEncoder": "encoders", "TextEmbedder": "encoders", "check_dim": "encoders",
    "cpu_has_bf16": "encoders", "MATRYOSHKA_DIMS": "dims", "supported_dims": "dims", "PREPROCESS_VERSION": "preprocess",
    "TASK_PREFIXES": "text", "with_prefix": "text",
}

__all__ = ["CheckpointMismatch", "MismatchedModels", "ModelUnavailable", "UnsupportedDim", "DEFAULT_TEXT",
           "DEFAULT_VISION", "PRESETS", "ModelSpec", "check_pair", "load", "load_pair", "preprocess_of", "resolve", "resolve_pair",
           "vision_shape",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

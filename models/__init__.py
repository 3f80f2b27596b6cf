"""Nomic Embed Vision/Text encoders for Glance (native PyTorch, no remote code, safetensors only)."""
from .encoders import (MATRYOSHKA_DIMS, PREPROCESS_VERSION, MismatchedModels, TextEmbedder, VisionEncoder,
                       check_dim, check_pair, cpu_has_bf16, load_pair)
from .hub import DEFAULT_TEXT, DEFAULT_VISION, ModelUnavailable
from .text import TASK_PREFIXES, with_prefix
from .weights import CheckpointMismatch

__all__ = ["VisionEncoder", "TextEmbedder", "load_pair", "check_pair", "check_dim", "cpu_has_bf16",
           "MismatchedModels", "ModelUnavailable", "CheckpointMismatch", "DEFAULT_VISION", "DEFAULT_TEXT",
           "MATRYOSHKA_DIMS", "PREPROCESS_VERSION", "TASK_PREFIXES", "with_prefix"]

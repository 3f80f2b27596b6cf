"""Nomic Embed Vision/Text encoders for Glance (native PyTorch, no remote code, safetensors only)."""
from .encoders import MATRYOSHKA_DIMS, PREPROCESS_VERSION, TextEmbedder, VisionEncoder, check_dim, cpu_has_bf16, load_pair
from .errors import CheckpointMismatch, MismatchedModels, ModelUnavailable, UnsupportedDim
from .hub import DEFAULT_TEXT, DEFAULT_VISION
from .text import TASK_PREFIXES, with_prefix

__all__ = ["VisionEncoder", "TextEmbedder", "load_pair", "check_dim", "cpu_has_bf16",
           "MismatchedModels", "UnsupportedDim", "ModelUnavailable", "CheckpointMismatch", "DEFAULT_VISION",
           "DEFAULT_TEXT", "MATRYOSHKA_DIMS", "PREPROCESS_VERSION", "TASK_PREFIXES", "with_prefix"]

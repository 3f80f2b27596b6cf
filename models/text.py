"""Nomic Embed Text v1 / v1.5: the text encoder (native model in models/nomic_text.py, no remote code).

`native_config` translates the official GPT-2-style config for transformers' NomicBertModel, which
models/synthetic.py uses to write random-weight checkpoints in the official layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import CheckpointMismatch, UnsupportedDim

TASK_PREFIXES = ("search_query: ", "search_document: ", "clustering: ", "classification: ")
QUERY_PREFIX = "search_query: "


def with_prefix(text: str) -> str:
    """Texts that already carry a Nomic task prefix are kept; anything else is a search query."""
    return text if text.startswith(TASK_PREFIXES) else QUERY_PREFIX + text


def native_config(official: dict):
    """Official GPT-2-style keys -> transformers.NomicBertConfig."""
    from transformers import NomicBertConfig

    if official.get("activation_function", "swiglu") != "swiglu" or official.get("prenorm", False):
        raise CheckpointMismatch("unsupported text config: only the post-norm SwiGLU Nomic BERT is supported")
    rope = {"rope_type": "default", "rope_theta": float(official.get("rotary_emb_base", 1000))}
    if official.get("rotary_scaling_factor"):
        rope = {"rope_type": "dynamic", "factor": float(official["rotary_scaling_factor"]),
                "rope_theta": rope["rope_theta"]}
    return NomicBertConfig(
        vocab_size=int(official["vocab_size"]),
        hidden_size=int(official["n_embd"]),
        num_hidden_layers=int(official["n_layer"]),
        num_attention_heads=int(official["n_head"]),
        intermediate_size=int(float(official["n_inner"])),
        hidden_act="silu",
        max_position_embeddings=int(official.get("max_trained_positions", 2048)),
        type_vocab_size=int(official.get("type_vocab_size", 2)),
        layer_norm_eps=float(official.get("layer_norm_epsilon", 1e-12)),
        rope_parameters=rope,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


class TextEncoder:
    """Tokenize -> NomicBERT (models/nomic_text.py) -> mean pool -> (v1.5: LN without affine) -> Matryoshka slice
    -> L2."""

    def __init__(self, folder: Path, version: str, dtype: torch.dtype, max_tokens: int | None = None):
        from .nomic_text import NomicTextConfig, build, load_tokenizer

        config = NomicTextConfig.from_official(json.loads((folder / "config.json").read_text()))
        self.model = build(config, folder / "model.safetensors", dtype)
        self.version = version
        self.hidden = config.hidden
        self.max_tokens = max_tokens or config.max_trained_positions
        self.tokenizer = load_tokenizer(folder, self.max_tokens)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        from .nomic_text import tokenize

        return tokenize(self.tokenizer, texts)

    @torch.inference_mode()
    def embed(self, texts: list[str], dim: int | None = None, batch_size: int = 32) -> torch.Tensor:
        """Texts exactly as given (prefix them first) -> L2-normalized float32 [N, dim]."""
        dim = dim or self.hidden
        if self.version == "v1" and dim != self.hidden:
            raise UnsupportedDim("Nomic Embed v1 was not trained for Matryoshka dims; use the full dimension")
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lengths.__getitem__)  # similar lengths share a batch: less padding
        out = torch.empty(len(texts), dim)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx], dim)
        return out

    def _embed_batch(self, texts: list[str], dim: int) -> torch.Tensor:
        tokens = self.tokenize(texts)
        hidden = self.model(tokens["input_ids"], tokens["attention_mask"])  # [B, S, D]
        mask = tokens["attention_mask"].unsqueeze(-1).float()  # [B, S, 1]
        pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, D]
        if self.version == "v1.5":
            pooled = F.layer_norm(pooled, (pooled.shape[-1],))
        return F.normalize(pooled[:, :dim], dim=-1)

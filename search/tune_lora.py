"""`glance tune --method lora`: LoRA adapters on the index's text tower (models/lora.py), trained with the same
contrastive loop as the adapter (search/tune.py) against the stored photo vectors, which stay locked.

Unlike the adapter, every step runs the text model forward and backward, so it costs model time: see
bench/tune_cost.py. Held-out and validation captions are re-embedded through the tuned tower to be scored.
"""
from __future__ import annotations

import numpy as np
import torch

from models import load
from models.lora import ALPHA, RANK, add_lora, embed_queries_with_grad, lora_state, set_lora

from . import heldout, modelmatch
from .tune import ContrastiveTrainer, Split

EMBED_BATCH = 64  # captions per forward pass when scoring (no gradients)


class LoraTrainer(ContrastiveTrainer):
    learning_rate = 5e-3  # higher than LoRA's usual: early stopping and the held-out check guard it
    batch = 64  # every caption in a batch keeps its activations for the backward pass: bounded memory

    def __init__(self, split: Split, meta: dict, seed: int, db_path, learning_rate: float | None = None):
        recorded = modelmatch.recorded_models(meta, db_path)
        choice = modelmatch.choose("text", recorded.text, None, recorded.version, db_path)
        torch.manual_seed(seed)
        self.text = load(choice.model, "fp32")  # training differentiates in fp32
        self.dim = recorded.dim
        self.texts = split.texts
        super().__init__(split, seed, add_lora(self.text), learning_rate)

    def encode(self, text_rows: np.ndarray):
        return embed_queries_with_grad(self.text, [self.texts[heldout.TRAIN][r] for r in text_rows], self.dim)

    def queries(self, role: str) -> np.ndarray:
        texts = self.texts[role]
        with torch.no_grad():
            parts = [embed_queries_with_grad(self.text, texts[i:i + EMBED_BATCH], self.dim).numpy()
                     for i in range(0, len(texts), EMBED_BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {name: value.numpy().copy() for name, value in lora_state(self.text).items()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        set_lora(self.text, state)

    def describe(self) -> dict:
        return {**super().describe(), "dim": self.dim, "rank": RANK, "alpha": ALPHA}

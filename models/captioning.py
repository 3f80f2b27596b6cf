"""Caption models: a text-to-text embedding space (sentence-transformers) for finding captions by meaning.

An image-text space places a caption near the photos it describes; a model trained on sentence pairs places a
caption near its paraphrases ("kitten napping on the couch" -> "a cat asleep on the sofa"). The index keeps
this second vector beside each caption (store/schema.py `caption_vector`), and caption search fuses both.

Loaded with the sentence-transformers library, and only when the folder proves it is safe to: weights in
safetensors, every module one of sentence-transformers' own, and no config that asks for remote code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointMismatch

# The modules a sentence-transformers folder may chain; anything else would be code from the model's repo.
SAFE_MODULES = {f"sentence_transformers.models.{name}" for name in
                ("Transformer", "Pooling", "Normalize", "Dense", "StaticEmbedding")}
PICKLED = ("pytorch_model.bin", "model.pt", "model.pth")
BATCH = 64


@dataclass(frozen=True)
class CaptionModelSpec:
    """A caption model whose files are found (resolved by models/factory.py), nothing loaded yet."""
    spec: str  # as an index records it: a Hub repo id, or an absolute folder path
    folder: Path
    dim: int
    # A caption at least this close to a query counts as describing it (photo search's caption route).
    match_cosine: float = 0.5


def check_folder(folder: Path) -> list[dict]:
    """The folder's modules, after refusing what would run remote code or unpickle weights."""
    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:
        if module.get("type") not in SAFE_MODULES:
            raise CheckpointMismatch(f"caption model {folder} chains the module {module.get('type')!r}, which is "
                                     f"code from the model's repository; Glance never runs remote code")
    config = json.loads((folder / "config.json").read_text())
    if config.get("auto_map"):
        raise CheckpointMismatch(f"caption model {folder} needs remote code (its config maps "
                                 f"{', '.join(sorted(config['auto_map']))} to the repository's own Python); Glance "
                                 f"never runs remote code")
    refuse_pickled(folder)
    return modules


def refuse_pickled(folder: Path) -> None:
    """A folder with pickled weights and no safetensors is refused, naming what it has."""
    pickled = [name for name in PICKLED if (folder / name).is_file()]
    if pickled and not (folder / "model.safetensors").is_file():
        raise CheckpointMismatch(f"caption model {folder} has no model.safetensors, only {', '.join(pickled)}, "
                                 f"which Glance never unpickles")


def declared_dim(folder: Path) -> int:
    """The embedding size, from the last module that states one (Dense, else Pooling), without loading."""
    modules = check_folder(folder)
    for module in reversed(modules):
        config = folder / module.get("path", "") / "config.json"
        if module["type"].endswith(("Dense", "Pooling")) and config.is_file():
            values = json.loads(config.read_text())
            for key in ("out_features", "embedding_dimension", "word_embedding_dimension"):
                if key in values:
                    return int(values[key])
    return int(json.loads((folder / "config.json").read_text())["hidden_size"])


class CaptionEncoder:
    """Unit-length caption embeddings, as a [N, dim] float32 array; queries and captions are embedded alike."""

    def __init__(self, model: CaptionModelSpec):
        check_folder(model.folder)
        from sentence_transformers import SentenceTransformer  # ~5 s to import: only when captions need it
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self.spec, self.dim = model.spec, model.dim
        self.model = SentenceTransformer(str(model.folder), device="cpu", trust_remote_code=False,
                                         local_files_only=True, model_kwargs={"use_safetensors": True})
        found = self.model.get_embedding_dimension()
        if found != model.dim:
            raise CheckpointMismatch(f"caption model {model.spec} embeds into {found} dimensions, not the "
                                     f"{model.dim} its configuration declares")

    def embed(self, texts: list[str]) -> np.ndarray:  # [N, dim]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(list(texts), batch_size=BATCH, convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

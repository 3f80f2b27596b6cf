"""The two encoders as Glance uses them: resolved from the Hub or a folder, paired, and run fast on CPU."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from . import hub
from .dims import MATRYOSHKA_DIMS, supported_dims
from .errors import UnsupportedDim
from .factory import TEXT, VISION, ModelSpec, resolve
from .preprocess import PREPROCESS_VERSION, Preprocess
from .text import QUERY_PREFIX, TextEncoder, with_prefix
from .vision import NomicVisionModel, VisionConfig, official_keys
from .weights import load_strict

MIN_COSINE_TO_FP32 = 0.999
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


@dataclass
class Precision:
    """What the matmuls run in, and how far that is from fp32 on a fixed probe input.

    bf16 runs under autocast with fp32 weights: matmuls and attention in bf16 (the CPU's fast units),
    while LayerNorms and the residual stream stay fp32. Measured on full-size random weights, that is
    as fast as casting the whole model to bf16 and twice as close to fp32 (bench/embed_throughput.py).
    """
    dtype: torch.dtype
    cosine_to_fp32: float = 1.0

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)


def choose_precision(requested: str, probe, native_bf16: bool | None = None) -> Precision:
    """fp32, bf16, or (auto) bf16 only where the CPU has it and it stays within MIN_COSINE_TO_FP32 of fp32.

    `probe(precision)` returns normalized embeddings of a fixed input computed at that precision.
    `native_bf16` defaults to what this CPU reports.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    native_bf16 = cpu_has_bf16() if native_bf16 is None else native_bf16
    if requested == "fp32" or (requested == "auto" and not native_bf16):
        return Precision(torch.float32)
    with torch.inference_mode():
        reference = probe(Precision(torch.float32))
        cosine = F.cosine_similarity(reference, probe(Precision(torch.bfloat16))).min().item()
    if requested == "auto" and cosine < MIN_COSINE_TO_FP32:
        return Precision(torch.float32, 1.0)
    return Precision(torch.bfloat16, cosine)


def probe_images(size: tuple[int, int], count: int = 2) -> list[Image.Image]:
    """Deterministic, photo-like inputs (smooth gradients plus texture) for the precision check."""
    gen = torch.Generator().manual_seed(0)
    h, w = size
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    images = []
    for i in range(count):
        base = torch.stack([xs, ys, (xs + ys) / 2]) * (0.4 + 0.3 * i)
        noise = torch.rand(3, h, w, generator=gen) * 0.3
        pixels = ((base + noise).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        images.append(Image.fromarray(pixels))
    return images


PROBE_TEXTS = ["search_query: a dog running on the beach at sunset", "search_query: receipts"]


class VisionEncoder:
    def __init__(self, model: ModelSpec | str = hub.DEFAULT_VISION, precision: str = "auto"):
        model = model if isinstance(model, ModelSpec) else resolve(model, VISION)
        self.spec, self.folder, self.version = model.spec, model.folder, model.version
        self.config = VisionConfig.from_official(json.loads((self.folder / "config.json").read_text()))
        self.preprocess = Preprocess.from_folder(self.folder)
        self.model = NomicVisionModel(self.config).eval()
        load_strict(self.model, self.folder / "model.safetensors", torch.float32, key_map=official_keys)
        probe = self.preprocess(probe_images(self.preprocess.input_size))
        self.precision = choose_precision(precision, lambda p: self._embed(probe, p))

    @property
    def dim(self) -> int:
        return self.config.hidden

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Normalized pixels [B, 3, H, W] -> L2-normalized float32 [B, dim]."""
        return truncate(self._embed(pixels, self.precision), dim)

    def _embed(self, pixels: torch.Tensor, precision: Precision) -> torch.Tensor:
        with torch.inference_mode(), precision.autocast():
            return self.model.embed(pixels)

    def embed_images(self, images: list[Image.Image], dim: int | None = None, batch_size: int = 16) -> torch.Tensor:
        """Decoded PIL images (any mode, EXIF orientation honoured) -> [N, dim]."""
        out = [self.embed_pixels(self.preprocess(images[i:i + batch_size]), dim)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, dim or self.dim)


class TextEmbedder:
    def __init__(self, model: ModelSpec | str = hub.DEFAULT_TEXT, precision: str = "auto"):
        model = model if isinstance(model, ModelSpec) else resolve(model, TEXT)
        self.spec, self.folder, self.version = model.spec, model.folder, model.version
        _quiet_transformers()
        self.encoder = TextEncoder(self.folder, self.version, torch.float32)
        self.precision = choose_precision(precision, lambda p: self._embed(PROBE_TEXTS, None, p))

    @property
    def dim(self) -> int:
        return self.encoder.hidden

    def embed(self, texts: list[str], dim: int | None = None) -> torch.Tensor:
        """Texts as given (task prefix included) -> L2-normalized float32 [N, dim]."""
        return self._embed(texts, dim, self.precision)

    def _embed(self, texts: list[str], dim: int | None, precision: Precision) -> torch.Tensor:
        with precision.autocast():
            return self.encoder.embed(texts, dim)

    def embed_queries(self, texts: list[str], dim: int | None = None) -> torch.Tensor:
        """Texts for the image space: `search_query: ` is added unless a task prefix is present."""
        return self.embed([with_prefix(t) for t in texts], dim)

    def embed_captions(self, texts: list[str], dim: int | None = None) -> torch.Tensor:
        """Captions live in the query space, next to what people type: always `search_query: <caption>` (the
        prefix belongs to the Nomic family; other families take captions as written)."""
        return self.embed([QUERY_PREFIX + t for t in texts], dim)


def truncate(vectors: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Matryoshka slice + re-normalize (only the text side was trained for this)."""
    if not dim or dim == vectors.shape[-1]:
        return vectors
    return F.normalize(vectors[:, :dim], dim=-1)


def check_dim(dim: int | None, full: int, version: str) -> int:
    dim = dim or full
    allowed = supported_dims(full, version)
    if dim not in allowed:
        raise UnsupportedDim(f"--dim {dim} is not available for this {version} model; choose one of {', '.join(map(str, allowed))}")
    return dim


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


__all__ = ["VisionEncoder", "TextEmbedder", "check_dim",
           "PREPROCESS_VERSION", "MATRYOSHKA_DIMS", "cpu_has_bf16"]

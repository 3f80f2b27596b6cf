"""The two encoders as Glance uses them: resolved from the Hub or a folder, paired, and run fast on CPU."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

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
    """What the matmuls run in, how they get there, and how far that is from fp32 on a fixed probe input.

    Two bf16 paths. Autocast over fp32 weights: LayerNorms and the residual stream stay fp32, and every call
    converts each weight to bf16 again; for a batch of images that is noise, for one short text query it was
    ~70% of the time. Held weights (text towers only): the linear layers' weights are cast to bf16 once at load
    and their inputs cast on the way in; everything between the matmuls stays fp32. A short query is a few
    tokens, so casting its activations costs little next to converting ~100M weights.
    """
    dtype: torch.dtype
    cosine_to_fp32: float = 1.0
    bf16_weights: bool = False

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @property
    def path(self) -> str:
        """fp32, bf16-weights or bf16-autocast: what an encoder reports as its precision."""
        if self.dtype != torch.bfloat16:
            return "fp32"
        return "bf16-weights" if self.bf16_weights else "bf16-autocast"

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16 and not self.bf16_weights)


def choose_precision(requested: str, probe, native_bf16: bool | None = None, hold_bf16=None) -> Precision:
    """fp32, bf16, or (auto) bf16 only where the CPU has it and it stays within MIN_COSINE_TO_FP32 of fp32.

    `probe(precision)` returns normalized embeddings of a fixed input computed at that precision.
    `native_bf16` defaults to what this CPU reports.
    `hold_bf16()`, where an encoder can hold its weights in bf16, casts them in place and returns a function that
    puts the fp32 weights back. Held weights are tried first (they are the faster path) and kept only within
    MIN_COSINE_TO_FP32; otherwise autocast, then (auto only) fp32.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    native_bf16 = cpu_has_bf16() if native_bf16 is None else native_bf16
    if requested == "fp32" or (requested == "auto" and not native_bf16):
        return Precision(torch.float32)
    with torch.inference_mode():
        reference = probe(Precision(torch.float32))
        if hold_bf16 is not None:
            restore = hold_bf16()
            held = Precision(torch.bfloat16, 1.0, bf16_weights=True)
            try:
                held.cosine_to_fp32 = F.cosine_similarity(reference, probe(held)).min().item()
            except RuntimeError:  # a tower whose code mixes dtypes on its own: the autocast path still serves it
                held.cosine_to_fp32 = -1.0
            if held.cosine_to_fp32 >= MIN_COSINE_TO_FP32:
                return held
            restore()
        cosine = F.cosine_similarity(reference, probe(Precision(torch.bfloat16))).min().item()
    if requested == "auto" and cosine < MIN_COSINE_TO_FP32:
        return Precision(torch.float32, 1.0)
    return Precision(torch.bfloat16, cosine)


def cached_precision(weights: Path, requested: str, probe, hold_bf16=None) -> Precision:
    """choose_precision, its outcome kept per weights file, torch and CPU (models/precision_cache.py): a second
    load replays it (casting held weights) instead of probing."""
    from .precision_cache import cached_choice, machine_key, weights_key

    def choose() -> Precision:
        return choose_precision(requested, probe, hold_bf16=hold_bf16)

    if requested == "fp32":  # nothing to probe
        return choose()
    key = {**weights_key(weights), **machine_key(), "requested": requested, "held": hold_bf16 is not None,
           "candidates": ["bf16-weights", "bf16-autocast", "fp32"], "min_cosine": MIN_COSINE_TO_FP32}

    def replay(entry: dict) -> Precision:
        path, cosine = entry["path"], float(entry["cosine_to_fp32"])
        if path == "fp32":
            return Precision(torch.float32, cosine)
        if path == "bf16-weights":
            if hold_bf16 is None:
                raise ValueError(path)
            hold_bf16()  # the fp32 copies are dropped with the returned restore function
            return Precision(torch.bfloat16, cosine, bf16_weights=True)
        if path == "bf16-autocast":
            return Precision(torch.bfloat16, cosine)
        raise ValueError(path)

    return cached_choice(key, choose, replay)


def hold_linear_weights_bf16(module: nn.Module, skip: tuple[str, ...] = ()):
    """Cast the weights of `module`'s linear layers (not those under the `skip` prefixes) to bf16 in place.

    Each layer then multiplies in bf16 (its input cast on the way in) and returns its input's dtype, so
    everything between the matmuls (attention, LayerNorms, embeddings, the residual stream) stays fp32. The fp32
    tensors are referenced only by the returned `restore` function: once it is dropped, memory is the bf16 copy
    alone (half of those layers' fp32 size).
    """
    saved = []
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.Linear) or any(name == s or name.startswith(s + ".") for s in skip):
            continue
        params = [p for p in (layer.weight, layer.bias) if p is not None]
        saved.append((layer, [(p, p.data) for p in params]))
        for p in params:
            p.data = p.data.to(torch.bfloat16)
        layer.forward = _bf16_linear.__get__(layer)
    for name, attn in module.named_modules():
        # open_clip's fused self-attention (models/openclip.py) reads in_proj_weight itself and casts to its dtype.
        if (isinstance(attn, nn.MultiheadAttention) and getattr(attn, "in_proj_weight", None) is not None
                and getattr(attn, "fused_self_attention", False)
                and not any(name == s or name.startswith(s + ".") for s in skip)):
            params = [p for p in (attn.in_proj_weight, attn.in_proj_bias) if p is not None]
            saved.append((None, [(p, p.data) for p in params]))
            for p in params:
                p.data = p.data.to(torch.bfloat16)

    def restore() -> None:
        for layer, params in saved:
            for p, data in params:
                p.data = data
            if layer is not None:
                del layer.forward
        saved.clear()
    return restore


def _bf16_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # Back in the input's dtype: rotary embeddings, attention masks and SDPA then see one dtype, as in fp32.
    return F.linear(x.to(layer.weight.dtype), layer.weight, layer.bias).to(x.dtype)


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
        self.precision = cached_precision(self.folder / "model.safetensors", precision,
                                          lambda p: self._embed(probe, p))

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
        self.encoder = TextEncoder(self.folder, self.version, torch.float32)
        self.precision = cached_precision(self.folder / "model.safetensors", precision,
                                          lambda p: self._embed(PROBE_TEXTS, None, p),
                                          hold_bf16=lambda: hold_linear_weights_bf16(self.encoder.model))

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


__all__ = ["VisionEncoder", "TextEmbedder", "check_dim",
           "PREPROCESS_VERSION", "MATRYOSHKA_DIMS", "cpu_has_bf16"]

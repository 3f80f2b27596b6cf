"""The two encoders as Glance uses them: resolved from the Hub or a folder, paired, and run fast on CPU."""
from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import hub
from .device import half_dtype, resolve_device
from .dims import MATRYOSHKA_DIMS, supported_dims
from .errors import UnsupportedDim
from .factory import TEXT, VISION, ModelSpec, resolve
from .preprocess import PREPROCESS_VERSION, Preprocess
from .text import QUERY_PREFIX, TextEncoder, with_prefix
from .vision import NomicVisionModel, VisionConfig

log = logging.getLogger("glance.models")

MIN_COSINE_TO_FP32 = 0.999
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    return _cpu_has(" avx512_bf16", " amx_bf16")


def cpu_has_int8() -> bool:
    """True where the CPU has int8 dot-product units (VNNI or AMX): without them int8 matmuls gain nothing."""
    return _cpu_has(" avx512_vnni", " avx_vnni", " amx_int8")


def _cpu_has(*flags: str) -> bool:
    try:
        listed = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in listed for flag in flags)


def cpu_has_amx() -> bool:
    """True on CPUs with AMX tiles (Intel Sapphire Rapids and later): bf16 matmuls run on them, ~2x AVX512-BF16."""
    return _cpu_has(" amx_bf16")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


@dataclass
class Precision:
    """What the matmuls run in, how they get there, and how far that is from fp32 on a fixed probe input.

    Two bf16 paths. Autocast over fp32 weights: LayerNorms and the residual stream stay fp32, and every call
    converts each weight to bf16 again; for a batch of images that is noise, for one short text query it was
    ~70% of the time. Held weights: cast to bf16 once at load. Text towers hold their linear layers' weights
    and cast inputs on the way in, so everything between the matmuls stays fp32 (a short query is a few tokens:
    casting its activations costs little next to converting ~100M weights). The Nomic vision tower holds all of
    it, activations included: a batch of images is ~200k tokens, and under autocast the fp32 casts, LayerNorms
    and elementwise ops around the matmuls took as long as the matmuls (bench/index_throughput.py).

    One int8 path (text towers only, `int8_weights`): the linear layers' weights quantized once at load, per output
    channel, and each layer's input quantized as it comes (one scale per call); the matmul runs int8 x int8 and
    returns fp32, and everything between the matmuls stays fp32 (`dtype`). A short query streams every weight once,
    so a quarter of fp32's bytes is what makes it fast: see hold_linear_weights_int8.
    """
    dtype: torch.dtype
    cosine_to_fp32: float = 1.0
    bf16_weights: bool = False
    int8_weights: bool = False
    device_type: str = "cpu"  # "cuda": a GPU runs fp32 or its 16-bit type under autocast (choose_gpu_precision)

    @property
    def name(self) -> str:
        if self.int8_weights:
            return "int8"
        return HALF_NAMES.get(self.dtype, "fp32")

    @property
    def path(self) -> str:
        """fp32, int8-dynamic, bf16-weights, bf16-autocast or fp16-autocast: what an encoder reports."""
        if self.int8_weights:
            return "int8-dynamic"
        if self.dtype not in HALF_NAMES:
            return "fp32"
        return "bf16-weights" if self.bf16_weights else f"{self.name}-autocast"

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype if self.dtype in HALF_NAMES else torch.bfloat16,
                              enabled=self.dtype in HALF_NAMES and not self.bf16_weights)


HALF_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def choose_gpu_precision(requested: str, probe, device: torch.device) -> Precision:
    """On a GPU: fp32, or the card's 16-bit type under autocast (bf16 from Ampere on, else fp16; `bf16` asks for
    it either way). auto keeps it only within MIN_COSINE_TO_FP32 of fp32 on the probe, as on the CPU."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    exact = Precision(torch.float32, device_type=device.type)
    if requested == "fp32":
        return exact
    half = Precision(half_dtype(device), device_type=device.type)
    with torch.inference_mode():
        half.cosine_to_fp32 = F.cosine_similarity(probe(exact), probe(half)).min().item()
    return exact if requested == "auto" and half.cosine_to_fp32 < MIN_COSINE_TO_FP32 else half


def choose_precision(requested: str, probe, native_bf16: bool | None = None, hold_bf16=None, hold_int8=None,
                     native_int8: bool | None = None) -> Precision:
    """fp32, bf16, or (auto) the fastest path this CPU has that stays within MIN_COSINE_TO_FP32 of fp32.

    `probe(precision)` returns normalized embeddings of a fixed input computed at that precision.
    `native_bf16` and `native_int8` default to what this CPU reports.
    `hold_bf16()` and `hold_int8()`, where an encoder can hold its weights so, convert them in place and return a
    function that puts the fp32 weights back. A held path is kept only within MIN_COSINE_TO_FP32. Auto tries them
    in the order they ran one short query on one thread (bench/query_embed.py): int8, held bf16, bf16 autocast,
    then fp32. `bf16` asks for the bf16 paths only (held, else autocast, whatever the cosine).
    int8 is also kept only where the probe runs in it within twice fp32's time (slack for noise, not a speed bar).
    Where oneDNN has no int8 kernel for a CPU it falls back to a reference loop: on an AMD EPYC with VNNI, one
    11-token layer took 542 ms in int8 against 0.43 ms in bf16, while int8 runs a full-size query 3-5x faster
    than fp32 where its kernels exist.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    native_bf16 = cpu_has_bf16() if native_bf16 is None else native_bf16
    native_int8 = cpu_has_int8() if native_int8 is None else native_int8
    try_int8 = requested == "auto" and native_int8 and hold_int8 is not None
    if requested == "fp32" or (requested == "auto" and not native_bf16 and not try_int8):
        return Precision(torch.float32)
    with torch.inference_mode():
        started = time.perf_counter()
        reference = probe(Precision(torch.float32))
        fp32_s = time.perf_counter() - started
        if try_int8:
            held = _try_held(hold_int8, Precision(torch.float32, int8_weights=True), probe, reference, fp32_s)
            if held is not None:
                return held
        if requested == "auto" and not native_bf16:
            return Precision(torch.float32)
        if hold_bf16 is not None:
            held = _try_held(hold_bf16, Precision(torch.bfloat16, bf16_weights=True), probe, reference)
            if held is not None:
                return held
        cosine = F.cosine_similarity(reference, probe(Precision(torch.bfloat16))).min().item()
    if requested == "auto" and cosine < MIN_COSINE_TO_FP32:
        return Precision(torch.float32, 1.0)
    return Precision(torch.bfloat16, cosine)


def _try_held(hold, held: Precision, probe, reference: torch.Tensor, fp32_s: float | None = None
              ) -> Precision | None:
    """`held` with its probe cosine when the held weights stay within MIN_COSINE_TO_FP32 (and, given
    `fp32_s`, run the probe within twice that time); else None, the fp32 weights put back."""
    try:
        restore = hold()
    except (RuntimeError, AttributeError, NotImplementedError):  # this torch build lacks the kernels: not here
        return None
    started = time.perf_counter()
    try:
        held.cosine_to_fp32 = F.cosine_similarity(reference, probe(held)).min().item()
    except (RuntimeError, TypeError):  # a tower whose code mixes dtypes on its own: another path serves it
        held.cosine_to_fp32 = -1.0
    took_s = time.perf_counter() - started
    if fp32_s is not None and took_s > 2 * fp32_s + 0.005:
        log.info("%s runs over twice as slow as fp32 on this CPU (%.3f s against %.3f s); another path serves",
                 held.path, took_s, fp32_s)
    elif held.cosine_to_fp32 >= MIN_COSINE_TO_FP32:
        return held
    restore()
    return None


def hold_weights_bf16(module: nn.Module):
    """Cast every floating-point parameter and buffer of `module` to bf16 in place: the whole tower, its
    activations too, runs in bf16 (its forward casts the input to its weights' dtype). Returns what puts the
    fp32 tensors back; once that is dropped, memory is the bf16 copy alone."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    saved = [(t, t.data) for t in tensors]
    for t in tensors:
        t.data = t.data.to(torch.bfloat16)

    def restore() -> None:
        for t, data in saved:
            t.data = data
        saved.clear()
    return restore


def cached_precision(weights: Path, requested: str, probe, hold_bf16=None, hold_int8=None) -> Precision:
    """choose_precision, its outcome kept per weights file, torch and CPU (models/precision_cache.py): a second
    load replays it (holding the weights as chosen) instead of probing."""
    from .precision_cache import cached_choice, machine_key, weights_key

    def choose() -> Precision:
        return choose_precision(requested, probe, hold_bf16=hold_bf16, hold_int8=hold_int8)

    if requested == "fp32":  # nothing to probe
        return choose()
    key = {**weights_key(weights), **machine_key(), "requested": requested,
           "held": [hold_bf16 is not None, hold_int8 is not None],
           "candidates": ["int8-dynamic", "bf16-weights", "bf16-autocast", "fp32"], "min_cosine": MIN_COSINE_TO_FP32,
           "int8_within_2x_fp32_time": True}  # choices cached before that check are not replayed

    def replay(entry: dict) -> Precision:
        path, cosine = entry["path"], float(entry["cosine_to_fp32"])
        held = {"int8-dynamic": (hold_int8, Precision(torch.float32, cosine, int8_weights=True)),
                "bf16-weights": (hold_bf16, Precision(torch.bfloat16, cosine, bf16_weights=True)),
                "bf16-autocast": (None, Precision(torch.bfloat16, cosine)),
                "fp32": (None, Precision(torch.float32, cosine))}
        hold, precision = held[path]
        if path in ("int8-dynamic", "bf16-weights"):
            if hold is None:
                raise ValueError(path)
            hold()  # the fp32 copies are dropped with the returned restore function
        return precision

    return cached_choice(key, choose, replay)


def hold_linear_weights_bf16(module: nn.Module, skip: tuple[str, ...] = ()):
    """Cast the weights of `module`'s linear layers (not those under the `skip` prefixes) to bf16 in place.

    Each layer then multiplies in bf16 (its input cast on the way in) and returns its input's dtype, so
    everything between the matmuls (attention, LayerNorms, embeddings, the residual stream) stays fp32. The fp32
    tensors are referenced only by the returned `restore` function: once it is dropped, memory is the bf16 copy
    alone (half of those layers' fp32 size).
    """
    return _hold_linears(module, skip, Bf16Linear)


def hold_linear_weights_int8(module: nn.Module, skip: tuple[str, ...] = ()):
    """Quantize the weights of `module`'s linear layers (not those under `skip`) to int8 in place (Int8Linear).

    As with bf16, everything between the matmuls stays fp32, and the fp32 weights live on only in `restore`.
    Raises RuntimeError (or AttributeError) where this torch has no oneDNN int8 kernels.
    """
    return _hold_linears(module, skip, Int8Linear)


class Bf16Linear:
    """x W^T + b with W and b held in bf16: the input is cast on the way in, the output back to its dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight = weight.to(torch.bfloat16)
        self.bias = bias.to(torch.bfloat16) if bias is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Back in the input's dtype: rotary embeddings, attention masks and SDPA then see one dtype, as in fp32.
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


class Int8Linear:
    """x W^T + b with W in int8, one scale per output channel, and x quantized to int8 as it comes (symmetric,
    one scale per call), multiplied on the int8 units (VNNI/AMX) and returned in fp32.

    Two int8 kernels, and the faster one on this CPU runs (int8_kernel): oneDNN's qlinear over a weight packed
    once at load, dequantizing inside it, or torch._int_mm with the scales applied after. On an AMD EPYC with
    VNNI, oneDNN's came out a reference loop (542 ms for one 11-token layer against 0.43 ms in bf16) while
    _int_mm took 0.21 ms; on Intel Xeon with AMX, oneDNN's ran a full-size query 3.8x faster than autocast.

    Why not weight-only int8 (bf16 activations x int8 weights, torch._weight_int8pack_mm): on this CPU its kernel
    is a matrix-vector loop, 1.8x slower than bf16 on an 11-token query. Quantizing the activations costs one
    max and one rounding per layer.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        weight = weight.float()
        self.scales = weight.abs().amax(1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # [out]
        self.weight = torch.round(weight / self.scales[:, None]).to(torch.int8)  # [out, in]
        self.bias = bias.float() if bias is not None else None
        self.kernel = int8_kernel()
        if self.kernel == "onednn":
            self.zero_points = torch.zeros(len(self.scales), dtype=torch.long)  # symmetric
            self.packed = torch.ops.onednn.qlinear_prepack(self.weight, None)  # oneDNN's layout, for any batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()  # [M, in]
        scale = max(rows.abs().max().item(), torch.finfo(torch.float32).tiny) / 127
        quantized = torch.round(rows / scale).to(torch.int8)  # |values| <= 127: no clamp needed
        if self.kernel == "onednn":
            out = _onednn_int8_linear(quantized, scale, self.packed, self.scales, self.zero_points, self.bias)
        else:
            out = torch._int_mm(quantized, self.weight.t()).float() * (self.scales * scale)  # [M, out]
            if self.bias is not None:
                out += self.bias
        return out.view(*x.shape[:-1], -1).to(x.dtype)


def _onednn_int8_linear(quantized: torch.Tensor, scale: float, packed: torch.Tensor, scales: torch.Tensor,
                        zero_points: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's int8 linear: int8 rows [M, in] (one `scale`, zero point 0) x a weight packed by qlinear_prepack
    (per-channel `scales`), plus `bias`, dequantized inside it to fp32 [M, out]."""
    return torch.ops.onednn.qlinear_pointwise(quantized, scale, 0, packed, scales, zero_points, bias, 1.0, 0,
                                              torch.float32, "none", [], "")


@functools.cache
def int8_kernel() -> str:
    """"onednn" or "int_mm": the faster on this CPU at a short query's layer ([16, 768] x [768, 768], best of 5
    each timed for at most ~50 ms). oneDNN only where its int8 ops load at all."""
    x = torch.randint(-127, 128, (16, 768), dtype=torch.int8)
    weight = torch.randint(-127, 128, (768, 768), dtype=torch.int8)  # [out, in]
    scales, zero_points = torch.full((768,), 0.01), torch.zeros(768, dtype=torch.long)
    candidates = {"int_mm": lambda: torch._int_mm(x, weight.t())}
    try:
        packed = torch.ops.onednn.qlinear_prepack(weight, None)
        candidates["onednn"] = lambda: _onednn_int8_linear(x, 0.01, packed, scales, zero_points, None)
    except (RuntimeError, AttributeError):  # this torch build has no oneDNN int8 ops
        pass

    def seconds(run) -> float:
        started = time.perf_counter()
        run()
        first = time.perf_counter() - started
        if first > 0.05:  # a reference loop (~0.2 s a call) is told apart by its first call
            return first
        best, deadline = first, time.perf_counter() + 0.03
        for _ in range(5):
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        return best
    return min(candidates, key=lambda name: seconds(candidates[name]))


def _hold_linears(module: nn.Module, skip: tuple[str, ...], held_linear):
    """Every nn.Linear under `module` (and open_clip's fused self-attention projection) runs as
    `held_linear(weight, bias)`; the parameters hold its tensors. Returns what puts the fp32 weights back."""
    def skipped(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in skip)

    saved = []
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear) and not skipped(name):
            held = held_linear(layer.weight.data, layer.bias.data if layer.bias is not None else None)
            saved.append((layer, "forward", _put(layer.weight, held.weight, layer.bias, held.bias)))
            layer.forward = held
        elif (isinstance(layer, nn.MultiheadAttention) and getattr(layer, "fused_self_attention", False)
              and getattr(layer, "in_proj_weight", None) is not None and not skipped(name)):
            # open_clip's fused self-attention (models/openclip.py) projects through `held_in_proj` when it is set.
            weight, bias = layer.in_proj_weight, layer.in_proj_bias
            held = held_linear(weight.data, bias.data if bias is not None else None)
            saved.append((layer, "held_in_proj", _put(weight, held.weight, bias, held.bias)))
            layer.held_in_proj = held

    def restore() -> None:
        for layer, attribute, params in saved:
            for p, data, requires_grad in params:
                p.data = data
                p.requires_grad_(requires_grad)
            delattr(layer, attribute)
        saved.clear()
    return restore


def _put(weight: nn.Parameter, held_weight: torch.Tensor, bias: nn.Parameter | None, held_bias: torch.Tensor | None):
    """Point the parameters at the held tensors (no second copy); returns (param, fp32 data, requires_grad)."""
    saved = []
    for p, data in ((weight, held_weight), (bias, held_bias)):
        if p is None:
            continue
        saved.append((p, p.data, p.requires_grad))
        if not data.is_floating_point():
            p.requires_grad_(False)  # an integer tensor cannot carry gradients
        p.data = data
    return saved


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
    def __init__(self, model: ModelSpec | str = hub.DEFAULT_VISION, precision: str = "auto", device: str = "cpu"):
        model = model if isinstance(model, ModelSpec) else resolve(model, VISION)
        self.spec, self.folder, self.version = model.spec, model.folder, model.version
        self.config = VisionConfig.from_official(json.loads((self.folder / "config.json").read_text()))
        self.preprocess = Preprocess.from_folder(self.folder)
        self.device = resolve_device(device)
        self.model = NomicVisionModel.build(self.config, self.folder / "model.safetensors", torch.float32)
        self.model.to(self.device)
        self._compiled = None  # compile(): the tower through torch.compile
        self._probe = probe = self.preprocess(probe_images(self.preprocess.input_size)).to(self.device)
        if self.device.type == "cuda":
            self.precision = choose_gpu_precision(precision, lambda p: self._embed(probe, p), self.device)
        else:
            self.precision = cached_precision(self.folder / "model.safetensors", precision,
                                              lambda p: self._embed(probe, p),
                                              hold_bf16=lambda: hold_weights_bf16(self.model))

    @property
    def dim(self) -> int:
        return self.config.hidden

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Normalized pixels [B, 3, H, W] (on the CPU, where decoding made them) -> L2-normalized float32 [B, dim]
        on the CPU."""
        vectors = self._embed(pixels.to(self.device, non_blocking=True), self.precision)
        return truncate(vectors.to("cpu", torch.float32), dim)

    def _embed(self, pixels: torch.Tensor, precision: Precision) -> torch.Tensor:
        with torch.inference_mode(), precision.autocast():
            return (self._compiled or self.model.embed)(pixels)

    def compile(self, batch_size: int) -> bool:
        """Run the tower through torch.compile from now on, for batches of `batch_size` (models/compiled.py):
        seconds once, then faster batches. On the CPU only; False where it cannot compile here or the compiled
        tower strays from fp32 (the eager one then goes on)."""
        if self._compiled is None and self.device.type == "cpu":
            from .compiled import compile_tower
            from .precision_cache import machine_key, weights_key

            weights = self.folder / "model.safetensors"
            check = {**weights_key(weights), **machine_key(), "compiled_batch": batch_size, "path": self.precision.path}
            with torch.inference_mode(), self.precision.autocast():
                self._compiled = compile_tower(self.model.embed, batch_size, self._probe,
                                               lambda: self._fp32_probe(weights), check, MIN_COSINE_TO_FP32)
        return self._compiled is not None

    def _fp32_probe(self, weights: Path) -> torch.Tensor:
        """The probe through a fresh fp32 copy of the tower (this one may hold bf16 weights)."""
        reference = NomicVisionModel.build(self.config, weights, torch.float32)
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            return reference.embed(self._probe)

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
                                          hold_bf16=lambda: hold_linear_weights_bf16(self.encoder.model),
                                          hold_int8=lambda: hold_linear_weights_int8(self.encoder.model))

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
           "PREPROCESS_VERSION", "MATRYOSHKA_DIMS", "cpu_has_bf16", "cpu_has_int8"]

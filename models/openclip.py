"""open_clip checkpoints (CLIP, SigLIP, ...) in the Hugging Face Hub layout, as Glance encoders.

A model folder is what open_clip pushes to the Hub:

    open_clip_config.json         {"model_cfg": {...}, "preprocess_cfg": {...}}
    open_clip_model.safetensors   the whole model's state dict (both towers)
    tokenizer.json, ...           only for text towers with an HF tokenizer (SigLIP's `hf_tokenizer_name`)

A text tower built on a transformers model (the multilingual CLIP's xlm-roberta-base) names that model's config
and tokenizer in text_cfg; models/hftext.py finds them as local files (a folder, or that repo's cached files).

open_clip builds the architecture from the config with no weights and nothing fetched; the weights are copied in
here from safetensors only, every key accounted for. Pickled checkpoints (.bin/.pt/.pth) are refused, never
opened. One folder holds both towers, so the two encoders can share one module (`load_open_clip_pair`).

    vision, text = load_open_clip_pair("/models/ViT-B-32", precision="auto")
    scores = vision.embed_images(images) @ text.embed_queries(["a dog"]).T
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from . import hftext
from .device import resolve_device
from .encoders import (Precision, choose_gpu_precision, choose_precision, hold_linear_weights_bf16,
                       hold_linear_weights_int8, probe_images)
from .errors import CheckpointMismatch, UnsupportedDim
from .factory import OPEN_CLIP, TEXT, VISION, ModelSpec
from .preprocess import Preprocess

LOCAL_DIR = "local-dir:"  # open_clip's schema for a folder: config, weights and tokenizer all from it
CONFIG = "open_clip_config.json"
# The names open_clip itself prefers, safetensors first; only these are ever read.
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors")
PICKLED_SUFFIXES = (".bin", ".pt", ".pth")
# An HF tokenizer is loaded from the folder itself (open_clip's local-dir rule); one of these must be there.
# A transformers text tower's tokenizer is the one its text_cfg names instead (models/hftext.py).
HF_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt")
VERSION_PREFIX = "open_clip:"
POSITION_IDS = "text.transformer.embeddings.position_ids"
# No task prefix: open_clip models embed text as typed.
PROBE_TEXTS = ["a dog running on the beach at sunset", "receipts"]


@dataclass(frozen=True)
class OpenClipConfig:
    """An open_clip folder's config, checked, the one weights file that will be read, and the local files of a
    transformers text tower."""
    folder: Path
    model_cfg: dict
    preprocess_cfg: dict
    weights: Path
    hf_text: hftext.HFText | None = None

    @classmethod
    def read(cls, folder: Path | str) -> "OpenClipConfig":
        folder = Path(folder)
        path = folder / CONFIG
        if not path.is_file():
            raise CheckpointMismatch(f"{folder} is not an open_clip model folder: {CONFIG} is missing")
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointMismatch(f"{path} cannot be read as JSON ({exc})") from None
        model_cfg = raw.get("model_cfg") if isinstance(raw, dict) else None
        if not isinstance(model_cfg, dict) or not {"vision_cfg", "text_cfg", "embed_dim"} <= set(model_cfg):
            raise CheckpointMismatch(f"{path} has no model_cfg with embed_dim, vision_cfg and text_cfg")
        weights = weights_file(folder)  # refused before anything is downloaded for the text tower
        return cls(folder, model_cfg, raw.get("preprocess_cfg") or {}, weights,
                   hftext.resolve(model_cfg["text_cfg"], folder))

    @property
    def embed_dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def hf_tokenizer(self) -> bool:
        return bool(self.model_cfg["text_cfg"].get("hf_tokenizer_name"))

    @property
    def text_cfg_override(self) -> dict | None:
        """The text_cfg open_clip builds from instead of the file's: local folders for the transformers names."""
        return self.hf_text.text_cfg if self.hf_text else None


def weights_file(folder: Path) -> Path:
    """The safetensors checkpoint; a folder with only pickled weights is refused without opening them."""
    for name in WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED_SUFFIXES)
    if pickled:
        raise CheckpointMismatch(f"{folder} has only pickled weights ({', '.join(pickled)}), which Glance never "
                                 f"loads (unpickling can run code); use a folder with {WEIGHTS[0]}")
    raise CheckpointMismatch(f"{folder} has no {WEIGHTS[0]}")


def model_spec(folder: Path | str, kind: str, spec: str | None = None) -> ModelSpec:
    """A ModelSpec for one tower of an open_clip folder; `spec` is what an index records (default: the folder).

    The release is the repo's (or folder's) last name, e.g. "open_clip:ViT-B-32": both towers of one folder
    share it. Two checkpoints of one architecture from different folders would too, so pairing should also
    compare the spec.
    """
    folder = Path(folder)
    config = OpenClipConfig.read(folder)
    spec = spec or str(folder.resolve())
    return ModelSpec(kind, spec, folder, VERSION_PREFIX + spec.rstrip("/").rsplit("/", 1)[-1], config.embed_dim,
                     OPEN_CLIP)


def build_model(config: OpenClipConfig) -> nn.Module:
    """open_clip's architecture from the config, then the checkpoint copied in strictly."""
    model = build_model_random(config.folder, config.text_cfg_override)
    load_state(model, config.weights)
    use_fused_self_attention(model)
    return model.eval()


def use_fused_self_attention(model: nn.Module) -> None:
    """Self-attention of open_clip's own transformer blocks through one projection and scaled_dot_product_attention.

    nn.MultiheadAttention, batch-first, projects a transposed (non-contiguous) view of its input. Under bf16
    autocast that matmul becomes a bmm over the weight copied once per token (65 x 768 x 2304 per layer for
    ViT-B-32-256): 4-5x slower than the fp32 model, where torch's fused fast path avoids it. Same weights and
    the same math, so fp32 results match to rounding (tests/test_openclip.py compares with open_clip itself).
    """
    from open_clip.transformer import ResidualAttentionBlock

    for block in model.modules():
        attn = getattr(block, "attn", None)
        if (isinstance(block, ResidualAttentionBlock) and isinstance(attn, nn.MultiheadAttention) and attn.batch_first
                and attn._qkv_same_embed_dim and attn.in_proj_bias is not None and not hasattr(block, "ln_1_kv")):
            block.attention = _fused_self_attention.__get__(block)
            attn.fused_self_attention = True  # its in_proj may be held in bf16 or int8 (encoders._hold_linears)


def _fused_self_attention(block: nn.Module, q_x: torch.Tensor, k_x: torch.Tensor | None = None,
                          v_x: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """What ResidualAttentionBlock.attention computes for self-attention ([N, L, D] in and out, eval mode)."""
    if k_x is not None or v_x is not None:  # cross-attention: open_clip's own path
        return type(block).attention(block, q_x, k_x, v_x, attn_mask)
    attn = block.attn
    n, length, width = q_x.shape
    held = getattr(attn, "held_in_proj", None)
    qkv = held(q_x) if held is not None else F.linear(q_x, attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3D]
    q, k, v = qkv.view(n, length, 3, attn.num_heads, width // attn.num_heads).permute(2, 0, 3, 1, 4)
    mask = attn_mask.to(q.dtype) if attn_mask is not None else None  # additive, like nn.MultiheadAttention's
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [N, heads, L, head_dim]
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


def build_model_random(folder: Path, text_cfg: dict | None = None) -> nn.Module:
    """The architecture of the folder's open_clip_config.json with open_clip's random init; nothing read or fetched.

    load_weights=False: open_clip would otherwise load any checkpoint it finds there, .bin (torch.load) included.
    pretrained_image/pretrained_text=False: no tower fetches base weights from the Hub.
    text_cfg: replaces the file's (a transformers tower's config named by a local folder, not a Hub name).
    """
    import open_clip

    root = logging.getLogger()
    root.addFilter(_not_from_open_clip)  # it warns "initialized randomly": true, but the weights come next
    try:
        return open_clip.create_model(LOCAL_DIR + str(folder), load_weights=False, pretrained_image=False,
                                      pretrained_text=False, device="cpu", precision="fp32",
                                      **({"text_cfg": text_cfg} if text_cfg else {}))
    finally:
        root.removeFilter(_not_from_open_clip)


def _not_from_open_clip(record: logging.LogRecord) -> bool:
    return f"{os.sep}open_clip{os.sep}" not in record.pathname


def load_state(model: nn.Module, path: Path) -> None:
    """Copy a safetensors state dict into `model`: missing, unexpected or mis-shaped keys are refused by name.

    The adaptations are open_clip's own: logit_scale/logit_bias saved as a scalar or as a 1-element vector, and
    a transformers text tower's position_ids, which transformers saved as a buffer before 4.31.
    """
    state = load_file(str(path))
    expected = model.state_dict()
    if POSITION_IDS in state and POSITION_IDS not in expected:
        del state[POSITION_IDS]
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in expected and state[key].numel() == expected[key].numel():
            state[key] = state[key].reshape(expected[key].shape)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        parts = [f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong_shape)) if keys]
        raise CheckpointMismatch(f"{path} does not match the model ({'; '.join(parts)})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def build_tokenizer(config: OpenClipConfig):
    """open_clip's tokenizer for the folder: CLIP's bundled BPE, the HF tokenizer whose files are in it, or a
    transformers tower's own tokenizer (as open_clip's get_tokenizer builds it for a Hub model)."""
    import open_clip
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

    if config.hf_text and config.hf_text.tokenizer:
        text_cfg = config.model_cfg["text_cfg"]
        return HFTokenizer(
            str(config.hf_text.tokenizer), context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
            tokenizer_mode=text_cfg.get("tokenizer_mode"), **text_cfg.get("tokenizer_kwargs", {}),
            local_files_only=True)
    kwargs = {}
    if config.hf_tokenizer:
        if not any((config.folder / name).is_file() for name in HF_TOKENIZER_FILES):
            raise CheckpointMismatch(f"{config.folder} names an HF tokenizer "
                                     f"({config.model_cfg['text_cfg']['hf_tokenizer_name']}) but holds none of "
                                     f"{', '.join(HF_TOKENIZER_FILES)}")
        kwargs["local_files_only"] = True  # open_clip reads it from the folder; never ask the Hub
    return open_clip.get_tokenizer(LOCAL_DIR + str(config.folder), **kwargs)


def check_dim(dim: int | None, full: int) -> int:
    """CLIP-style models were not trained for Matryoshka truncation: only the full size."""
    if dim and dim != full:
        raise UnsupportedDim(f"--dim {dim} is not available for this open_clip model; it embeds into {full} only")
    return full


def _resolve(model: ModelSpec | Path | str, kind: str) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else model_spec(model, kind)


class OpenClipVision:
    """The image tower: PIL images or normalized pixels -> L2-normalized float32 [B, dim]."""

    def __init__(self, model: ModelSpec | Path | str, precision: str = "auto", module: nn.Module | None = None,
                 device: str = "cpu"):
        model = _resolve(model, VISION)
        self.spec, self.folder, self.version = model.spec, model.folder, model.version
        self.config = OpenClipConfig.read(self.folder)
        self.preprocess = Preprocess.from_open_clip(self.config.preprocess_cfg)
        self.device = resolve_device(device)
        # a module shared with the text tower (load_pair) stays on the CPU with it
        self.model = (module if module is not None else build_model(self.config)).to(self.device)
        probe = self.preprocess(probe_images(self.preprocess.input_size)).to(self.device)
        if self.device.type == "cuda":
            self.precision = choose_gpu_precision(precision, lambda p: self._embed(probe, p), self.device)
        else:
            self.precision = choose_precision(precision, lambda p: self._embed(probe, p))

    @property
    def dim(self) -> int:
        return self.config.embed_dim

    def embed_pixels(self, pixels: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Normalized pixels [B, 3, H, W] -> L2-normalized float32 [B, dim]."""
        check_dim(dim, self.dim)
        return self._embed(pixels.to(self.device, non_blocking=True), self.precision).cpu()

    def _embed(self, pixels: torch.Tensor, precision: Precision) -> torch.Tensor:
        with torch.inference_mode(), precision.autocast():
            out = self.model.encode_image(pixels, normalize=True)  # [B, dim]
        return out.float()

    def compile(self, batch_size: int) -> bool:
        """Not compiled: open_clip's ViT-B-32-256 under bf16 autocast ran 119.5-120.2 images/s through
        torch.compile against 123.4-123.5 eager (batch 32, Intel Xeon with AMX), so `--compile` leaves it eager."""
        return False

    def embed_images(self, images: list[Image.Image], dim: int | None = None, batch_size: int = 16) -> torch.Tensor:
        """Decoded PIL images (any mode, EXIF orientation honoured) -> [N, dim]."""
        check_dim(dim, self.dim)
        out = [self.embed_pixels(self.preprocess(images[i:i + batch_size]))
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.dim)


class OpenClipText:
    """The text tower: texts exactly as typed -> L2-normalized float32 [N, dim]."""

    def __init__(self, model: ModelSpec | Path | str, precision: str = "auto", module: nn.Module | None = None):
        model = _resolve(model, TEXT)
        self.spec, self.folder, self.version = model.spec, model.folder, model.version
        self.config = OpenClipConfig.read(self.folder)
        self.tokenizer = build_tokenizer(self.config)
        self.model = module if module is not None else build_model(self.config)
        # The vision tower (`visual`) may share this module; it keeps fp32 weights under autocast.
        self.precision = choose_precision(precision, lambda p: self._embed(PROBE_TEXTS, p),
                                          hold_bf16=lambda: hold_text_weights(self.model, hold_linear_weights_bf16),
                                          hold_int8=lambda: hold_text_weights(self.model, hold_linear_weights_int8))

    @property
    def dim(self) -> int:
        return self.config.embed_dim

    def embed(self, texts: list[str], dim: int | None = None) -> torch.Tensor:
        """Texts as given -> L2-normalized float32 [N, dim]."""
        check_dim(dim, self.dim)
        return self._embed(texts, self.precision)

    def _embed(self, texts: list[str], precision: Precision) -> torch.Tensor:
        if not texts:
            return torch.empty(0, self.dim)
        tokens = self.tokenizer(list(texts))  # [N, context_length] ids, padded and truncated by open_clip
        with torch.inference_mode(), precision.autocast():
            out = self.model.encode_text(tokens, normalize=True)  # [N, dim]
        return out.float()

    def embed_queries(self, texts: list[str], dim: int | None = None) -> torch.Tensor:
        """Search queries: the same as `embed`, since task prefixes belong to the Nomic family, not open_clip."""
        return self.embed(texts, dim)

    def embed_captions(self, texts: list[str], dim: int | None = None) -> torch.Tensor:
        """Captions: as written, like queries."""
        return self.embed(texts, dim)


def hold_text_weights(model: nn.Module, hold_linears):
    """The text tower's linear layers held by `hold_linears` (encoders.hold_linear_weights_bf16 or _int8); returns
    what puts fp32 back.

    open_clip casts token embeddings to the dtype of the first MLP's weight (Transformer.get_cast_dtype): pinned
    to fp32 here, so the residual stream stays fp32 and meets the fp32 text_projection.
    """
    restore_linears = hold_linears(model, skip=("visual",))
    transformer = getattr(model, "transformer", None)
    pinned = transformer is not None and hasattr(transformer, "get_cast_dtype")
    if pinned:
        transformer.get_cast_dtype = lambda: torch.float32

    def restore() -> None:
        restore_linears()
        if pinned:
            del transformer.get_cast_dtype
    return restore


def load_open_clip_pair(folder: Path | str, precision: str = "auto", spec: str | None = None,
                        ) -> tuple[OpenClipVision, OpenClipText]:
    """(OpenClipVision, OpenClipText) for one folder, sharing one module: the weights are read once."""
    vision_spec, text_spec = model_spec(folder, VISION, spec), model_spec(folder, TEXT, spec)
    vision = OpenClipVision(vision_spec, precision)
    return vision, OpenClipText(text_spec, precision, module=vision.model)


__all__ = ["OpenClipVision", "OpenClipText", "OpenClipConfig", "load_open_clip_pair", "model_spec",
           "build_model", "build_tokenizer", "load_state", "weights_file", "check_dim"]

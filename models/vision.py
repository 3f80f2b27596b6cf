"""Nomic Embed Vision v1 / v1.5: an EVA02-style ViT with a MAP "selector" head.

A native re-implementation of the architecture described in docs (nomic-spec §2), loading the
official safetensors keys unchanged. Shapes: B batch, N = 1 + G*G tokens (CLS + patches),
D hidden, H heads, hd = D / H head dim, G patch-grid side.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .errors import CheckpointMismatch


@dataclass(frozen=True)
class VisionConfig:
    hidden: int = 768
    heads: int = 12
    layers: int = 12
    mlp_hidden: int = 2048
    img_size: int = 224
    patch_size: int = 16
    channels: int = 3
    ln_eps: float = 1e-6
    rope_base: float = 10000.0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @classmethod
    def from_official(cls, cfg: dict) -> "VisionConfig":
        """Translate the official GPT-2-style config.json; refuse features this module lacks."""
        unsupported = {
            "prenorm": True, "no_cls_token": False, "register_tokens": 0, "use_pos_embed": True,
            "learned_pos_embedding": False, "use_rotary_pos_emb": True, "norm_mlp": True,
            "no_last_ln": True, "activation_function": "swiglu", "layer_scale": False,
        }
        for key, wanted in unsupported.items():
            if key in cfg and cfg[key] != wanted:
                raise CheckpointMismatch(f"unsupported vision config: {key}={cfg[key]!r} (expected {wanted!r})")
        return cls(
            hidden=int(cfg["n_embd"]), heads=int(cfg["n_head"]), layers=int(cfg["n_layer"]),
            mlp_hidden=int(float(cfg["n_inner"])),  # official file stores 2048.0
            img_size=int(cfg.get("img_size", 224)), patch_size=int(cfg.get("patch_size", 16)),
            channels=int(cfg.get("num_channels", 3)), ln_eps=float(cfg.get("layer_norm_epsilon", 1e-6)),
            rope_base=float(cfg.get("rotary_emb_base", 10000)),
        )


def rope_2d_table(grid: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and pair-signed sin [1 + G*G, hd] for EVA 2-D RoPE over CLS + patches.

    The first half of each head rotates by the patch row, the second by the column; frequencies are
    duplicated into adjacent pairs (interleaved-pair rotation). CLS gets the identity (cos 1, sin 0).
    The sin is pre-signed so that rope(x) = x * cos + swap_pairs(x) * sin.
    """
    quarter, cpu = head_dim // 4, torch.device("cpu")  # computed on the CPU even while the model is built on meta
    bands = base ** (-torch.arange(quarter, dtype=torch.float64, device=cpu) / quarter)  # [hd/4]
    positions = torch.arange(grid, dtype=torch.float64, device=cpu)
    angles = torch.outer(positions, bands).repeat_interleave(2, dim=-1)  # [G, hd/2]
    rows = angles[:, None, :].expand(grid, grid, -1)
    cols = angles[None, :, :].expand(grid, grid, -1)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)  # [G*G, hd]
    table = torch.cat([torch.zeros(1, head_dim, dtype=table.dtype, device=cpu), table])  # CLS row: no rotation
    sign = torch.tensor([-1.0, 1.0], dtype=table.dtype, device=cpu).repeat(head_dim // 2)  # rot(x)[2j] = -x[2j+1]
    return table.cos().float(), (table.sin() * sign).float()


def swap_pairs(x: torch.Tensor) -> torch.Tensor:
    """[..., x0, x1, x2, x3, ...] -> [..., x1, x0, x3, x2, ...]"""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


class GatedMLP(nn.Module):
    """y = fc2(norm?(up * silu(gate))). The checkpoint's fc11 (up) and fc12 (gate) are stored fused
    as fc1 = [fc11; fc12], so one matmul serves both."""

    def __init__(self, dim: int, hidden: int, inner_norm: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.norm = nn.LayerNorm(hidden) if inner_norm else None  # eps 1e-5: EVA's default, not the config's
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = self.fc1(x).chunk(2, dim=-1)  # [..., hidden] each
        y = up * F.silu(gate)
        if self.norm is not None:
            y = self.norm(y)
        return self.fc2(y)


class SelfAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.heads = cfg.heads
        self.Wqkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out_proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.Wqkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k = (t * cos + swap_pairs(t) * sin for t in (q, k))  # [B, H, N, hd]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)
        self.attn = SelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)
        self.mlp = GatedMLP(cfg.hidden, cfg.mlp_hidden, inner_norm=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class Embeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch = cfg.patch_size
        self.proj = nn.Linear(cfg.channels * cfg.patch_size**2, cfg.hidden)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid**2, cfg.hidden))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # [B, C, G*p, G*p] -> [B, G*G, C*p*p], patches row-major, each flattened (c, py, px)
        patches = rearrange(pixels, "b c (gh p1) (gw p2) -> b (gh gw) (c p1 p2)", p1=self.patch, p2=self.patch)
        x = self.proj(patches)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [B, N, D]
        return x + self.pos_embed


class MAPAttention(nn.Module):
    """One learned latent query cross-attends over all tokens (no RoPE)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.heads = cfg.heads
        self.latent = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        self.Wq = nn.Linear(cfg.hidden, cfg.hidden)
        self.Wkv = nn.Linear(cfg.hidden, 2 * cfg.hidden)
        self.out_proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.Wq(self.latent), "1 1 (h d) -> 1 h 1 d", h=self.heads).expand(x.shape[0], -1, -1, -1)
        k, v = rearrange(self.Wkv(x), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, 1, hd]
        return self.out_proj(rearrange(out, "b h 1 d -> b 1 (h d)"))


class Selector(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.attn = MAPAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)
        self.mlp = GatedMLP(cfg.hidden, cfg.mlp_hidden, inner_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm1(self.attn(x)))  # [B, 1, D]


class NomicVisionModel(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.selector = Selector(cfg)
        cos, sin = rope_2d_table(cfg.grid, cfg.hidden // cfg.heads, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # [N, hd]
        self.register_buffer("rope_sin", sin, persistent=False)

    @classmethod
    def build(cls, cfg: VisionConfig, path: Path, dtype: torch.dtype) -> "NomicVisionModel":
        """The model with the official weights of `path`, built without initialising the parameters they replace."""
        from .weights import load_strict

        with torch.device("meta"):
            model = cls(cfg)
        load_strict(model, path, dtype, key_map=official_keys, assign=True)  # the RoPE tables are on the CPU already
        return model.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] normalized -> unnormalized embedding [B, D] (= trunk CLS + selector output)."""
        x = self.embeddings(pixels.to(self.embeddings.proj.weight.dtype))
        cos, sin = self.rope_cos.to(x.dtype), self.rope_sin.to(x.dtype)
        for block in self.layers:
            x = block(x, cos, sin)
        return x[:, 0] + self.selector(x)[:, 0]

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalized float32 embedding [B, D]."""
        return F.normalize(self.forward(pixels).float(), dim=-1)



def official_keys(native_keys: list[str]) -> dict[str, list[str]]:
    """native key -> the official checkpoint keys it is built from (fc1 = cat(fc11, fc12))."""
    return {k: [k.replace(".fc1.", ".fc11."), k.replace(".fc1.", ".fc12.")] if ".fc1." in k else [k]
            for k in native_keys}

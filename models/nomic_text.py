"""Nomic Embed Text v1 / v1.5 (NomicBERT): a native re-implementation, so a query needs no `transformers` import.

transformers' NomicBertModel was the reference, and it drags in torch.distributed, torch._dynamo and its own
loss and masking modules: ~1-4 s of imports before the first query, which a one-shot `glance search` paid every
time. The architecture is small (nomic-spec §1.2): post-norm BERT blocks with RoPE and a SwiGLU MLP.

Module names are transformers' (layers.N.self_attn.q_proj, mlp.up_proj, ...), so LoRA tunings saved against
that class (models/lora.py TARGETS) load unchanged. Shapes: B batch, S tokens, D hidden, H heads, hd = D / H.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointMismatch


@dataclass(frozen=True)
class NomicTextConfig:
    vocab_size: int = 30528
    hidden: int = 768
    heads: int = 12
    layers: int = 12
    mlp_hidden: int = 3072
    type_vocab_size: int = 2
    ln_eps: float = 1e-12
    rope_base: float = 1000.0
    rope_scaling: float | None = None  # Dynamic NTK factor (long context), off in the released configs
    max_trained_positions: int = 2048

    @classmethod
    def from_official(cls, cfg: dict) -> "NomicTextConfig":
        """Translate the official GPT-2-style config.json; refuse the variants this module lacks."""
        if cfg.get("activation_function", "swiglu") != "swiglu" or cfg.get("prenorm", False):
            raise CheckpointMismatch("unsupported text config: only the post-norm SwiGLU Nomic BERT is supported")
        for key in ("qkv_proj_bias", "mlp_fc1_bias", "mlp_fc2_bias"):
            if cfg.get(key, False):
                raise CheckpointMismatch(f"unsupported text config: {key}=true")
        if cfg.get("rotary_emb_fraction", 1.0) != 1.0 or cfg.get("rotary_emb_interleaved", False):
            raise CheckpointMismatch("unsupported text config: only full, half-split rotary embeddings")
        return cls(vocab_size=int(cfg["vocab_size"]), hidden=int(cfg["n_embd"]), heads=int(cfg["n_head"]),
                   layers=int(cfg["n_layer"]), mlp_hidden=int(float(cfg["n_inner"])),
                   type_vocab_size=int(cfg.get("type_vocab_size", 2)),
                   ln_eps=float(cfg.get("layer_norm_epsilon", 1e-12)),
                   rope_base=float(cfg.get("rotary_emb_base", 1000)),
                   rope_scaling=float(cfg["rotary_scaling_factor"]) if cfg.get("rotary_scaling_factor") else None,
                   max_trained_positions=int(cfg.get("max_trained_positions", 2048)))


def rope_table(cfg: NomicTextConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [S, hd] for positions 0..S-1 (half-split form: the hd/2 angles repeated twice)."""
    head_dim = cfg.hidden // cfg.heads
    base = cfg.rope_base
    if cfg.rope_scaling and length > cfg.max_trained_positions:  # Dynamic NTK: stretch the base past training
        f = cfg.rope_scaling
        base *= (f * length / cfg.max_trained_positions - (f - 1)) ** (head_dim / (head_dim - 2))
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # [hd/2]
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # [S, hd/2]
    angles = torch.cat([angles, angles], dim=-1)  # [S, hd]
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class Embeddings(nn.Module):
    def __init__(self, cfg: NomicTextConfig):
        super().__init__()
        # Given weights, not initialised ones: on the meta device nn.Embedding's normal_ init imports ~900
        # modules (seconds); the checkpoint overwrites them anyway.
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden, _weight=torch.empty(cfg.vocab_size, cfg.hidden))
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden,
                                                  _weight=torch.empty(cfg.type_vocab_size, cfg.hidden))
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)  # noqa: N815 - the checkpoint's name

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # No position table (RoPE); token type is always 0.
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]  # [B, S, D]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: NomicTextConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(cfg.hidden, cfg.hidden, bias=False)
                                                              for _ in range(4))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (proj(x).view(b, s, self.heads, -1).transpose(1, 2) for proj in (self.q_proj, self.k_proj,
                                                                                    self.v_proj))  # [B, H, S, hd]
        q, k = (t * cos + rotate_half(t) * sin for t in (q, k))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # mask [B, 1, 1, S]: padded keys off
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)); the checkpoint's fc12 is the gate, fc11 the up projection."""

    def __init__(self, cfg: NomicTextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Post-norm: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, cfg: NomicTextConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)
        self.mlp = GatedMLP(cfg)
        self.post_mlp_layernorm = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.post_attention_layernorm(x + self.self_attn(x, cos, sin, mask))
        return self.post_mlp_layernorm(x + self.mlp(x))


class NomicTextModel(nn.Module):
    def __init__(self, cfg: NomicTextConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, S] (right-padded) -> last hidden state [B, S, D]."""
        x = self.embeddings(input_ids)
        cos, sin = (t.to(x.dtype) for t in rope_table(self.cfg, input_ids.shape[1]))
        mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, S]
        for block in self.layers:
            x = block(x, cos, sin, mask)
        return x


def official_key(native: str) -> str:
    """A native parameter name -> the official checkpoint key it comes from (q/k/v are rows of Wqkv)."""
    renames = {"embeddings.LayerNorm.": "emb_ln.", "layers.": "encoder.layers.",
               "self_attn.o_proj": "attn.out_proj", "mlp.up_proj": "mlp.fc11", "mlp.gate_proj": "mlp.fc12",
               "mlp.down_proj": "mlp.fc2", "post_attention_layernorm": "norm1", "post_mlp_layernorm": "norm2"}
    for a, b in renames.items():
        if native.startswith(a) or f".{a}" in native:
            native = native.replace(a, b, 1)
    for proj in ("q_proj", "k_proj", "v_proj"):
        native = native.replace(f"self_attn.{proj}", "attn.Wqkv")
    return native


def load_official(model: NomicTextModel, path: Path, dtype: torch.dtype) -> None:
    """The official safetensors (never a pickle) into `model`; every key must be accounted for.

    The file's tensors are assigned, not copied, so a model built on the meta device (`build`) never pays for
    random initialisation nor a second copy of its weights."""
    state = load_file(str(path))
    expected = model.state_dict()
    wanted = {official_key(k) for k in expected}
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or unexpected:
        raise CheckpointMismatch(f"{path} does not match the text model (missing: {', '.join(missing[:8])}; "
                                 f"unexpected: {', '.join(unexpected[:8])})")
    native = {}
    for key, target in expected.items():
        tensor = state[official_key(key)]
        if ".attn.Wqkv" in official_key(key):  # rows: Q | K | V
            part = ("q_proj", "k_proj", "v_proj").index(key.split(".")[-2])
            tensor = tensor.chunk(3, dim=0)[part]
        if tensor.shape != target.shape:
            raise CheckpointMismatch(f"{path} does not match the text model (wrong shape: {official_key(key)})")
        native[key] = tensor.to(dtype)
    model.load_state_dict(native, strict=True, assign=True)


def build(config: NomicTextConfig, path: Path, dtype: torch.dtype) -> NomicTextModel:
    """The model with the weights of `path`, built without initialising parameters that are overwritten."""
    with torch.device("meta"):
        model = NomicTextModel(config)
    load_official(model, path, dtype)
    return model.eval()


def load_tokenizer(folder: Path, max_tokens: int):
    """tokenizer.json through the `tokenizers` package (what transformers' fast tokenizer wraps): [CLS] text
    [SEP], right-padded with [PAD], truncated to `max_tokens`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad = "[PAD]"
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None:
        raise CheckpointMismatch(f"{folder}/tokenizer.json has no {pad} token")
    tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad)
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def tokenize(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """Texts -> input_ids, attention_mask [B, S] int64."""
    encodings = tokenizer.encode_batch(texts)
    return {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)}


__all__ = ["NomicTextConfig", "NomicTextModel", "build", "load_official", "load_tokenizer", "tokenize"]

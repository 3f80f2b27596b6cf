"""LoRA adapters on a text tower (peft), for `glance tune --method lora` and for search with such a tuning.

Only the text side gets adapters (LiT-style: the image tower and every stored photo vector stay as they are).
peft injects the adapters into the loaded module in place; `adapters_enabled(text, False)` gives the base model
back for a moment, so one loaded copy serves both the tuned photo route and the untuned caption search.

    params = add_lora(text)                     # trainable LoRA parameters, the base weights frozen
    vectors = embed_queries_with_grad(text, texts, dim)   # differentiable query embeddings
    state = lora_state(text)                    # {name: tensor}: what a tuning saves (safetensors)
    load_lora(text, state)                      # into a freshly loaded model of the same kind
"""
from __future__ import annotations

import contextlib
import threading

import torch

from .errors import CheckpointMismatch

RANK, ALPHA = 8, 16
# The text tower's linear layers, per module layout. open_clip's attention runs through a fused kernel that reads
# its weights directly (models/openclip.py), so only its MLPs take adapters there.
TARGETS = {
    "nomic": r"^layers\.\d+\.(self_attn\.(q_proj|v_proj|o_proj)|mlp\.(up_proj|down_proj))$",
    "open_clip": r"^(transformer\.resblocks\.\d+\.mlp\.(c_fc|c_proj)"
                 r"|text\.transformer\.encoder\.layer\.\d+\.(attention\.self\.(query|value)|intermediate\.dense))$",
}
_switch = threading.Lock()  # enabling/disabling adapters is a module-wide state: one embedding at a time


def _family_module(text) -> tuple[str, torch.nn.Module]:
    encoder = getattr(text, "encoder", None)
    if encoder is not None and hasattr(encoder, "model"):
        return "nomic", encoder.model
    return "open_clip", text.model


def add_lora(text, rank: int = RANK, alpha: int = ALPHA) -> list[torch.nn.Parameter]:
    """Inject fresh LoRA adapters (B = 0: the model is unchanged until trained); returns what to train."""
    from peft import LoraConfig, inject_adapter_in_model

    family, module = _family_module(text)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=TARGETS[family], bias="none")
    inject_adapter_in_model(config, module)
    trainable = [p for name, p in module.named_parameters() if "lora_" in name]
    if not trainable:
        raise CheckpointMismatch(f"no layer of the text model {text.spec} takes LoRA adapters")
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


def lora_state(text) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {name: value.detach().float().contiguous()
            for name, value in get_peft_model_state_dict(_family_module(text)[1]).items()}


def set_lora(text, state: dict) -> None:
    """Put saved adapter values into a model that already has adapters; every saved tensor must find its place."""
    from peft import set_peft_model_state_dict

    module = _family_module(text)[1]
    result = set_peft_model_state_dict(module, {k: torch.as_tensor(v) for k, v in state.items()})
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CheckpointMismatch(f"the LoRA tuning does not fit the text model {text.spec}: {unexpected[:3]}")


def load_lora(text, state: dict, rank: int = RANK, alpha: int = ALPHA) -> None:
    """Adapters saved by `lora_state` into this (base) model, for search: frozen, in eval mode."""
    add_lora(text, rank, alpha)
    set_lora(text, state)
    module = _family_module(text)[1]
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()


@contextlib.contextmanager
def adapters_enabled(text, enabled: bool):
    """The model with its LoRA adapters on or off, for one embedding."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in _family_module(text)[1].modules() if isinstance(m, BaseTunerLayer)]
    with _switch:
        for layer in layers:
            layer.enable_adapters(enabled)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)


def embed_queries_with_grad(text, texts: list[str], dim: int | None = None) -> torch.Tensor:
    """Query embeddings as `text.embed_queries` gives them (prefix, pooling, Matryoshka cut, unit length), with
    autograd on and in fp32: what training differentiates."""
    family, module = _family_module(text)
    if family == "nomic":
        from .text import with_prefix

        return text.encoder._embed_batch([with_prefix(t) for t in texts], dim or text.dim)
    tokens = text.tokenizer(list(texts))  # [N, context] ids
    return torch.nn.functional.normalize(module.encode_text(tokens, normalize=True).float()[:, :dim or text.dim],
                                         dim=-1)

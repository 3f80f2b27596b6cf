"""Loading official safetensors checkpoints: never unpickles, and every key must be accounted for."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class CheckpointMismatch(Exception):
    pass


def load_strict(module: nn.Module, path: Path, dtype: torch.dtype) -> None:
    """Copy a safetensors file into `module` (cast to `dtype`); missing or unexpected keys are an error."""
    state = load_file(str(path))
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        parts = [f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if keys]
        raise CheckpointMismatch(f"{path} does not match the model ({'; '.join(parts)})")
    module.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)

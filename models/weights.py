"""Loading official safetensors checkpoints: never unpickles, and every key must be accounted for."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointMismatch


def load_strict(module: nn.Module, path: Path, dtype: torch.dtype,
                key_map: Callable[[list[str]], dict[str, list[str]]] | None = None, assign: bool = False) -> None:
    """Copy a safetensors file into `module`, cast to `dtype`; with `assign`, the file's tensors become the
    parameters (a module built on the meta device then never initialises nor copies them).

    key_map(native keys) -> {native key: [official keys concatenated along dim 0]}; identity if None.
    Missing, unexpected or mis-shaped keys raise CheckpointMismatch naming them (official names).
    """
    state = load_file(str(path))
    expected = module.state_dict()
    sources = key_map(list(expected)) if key_map else {k: [k] for k in expected}
    wanted = {k for keys in sources.values() for k in keys}
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
    native = {}
    if not missing:
        native = {k: torch.cat([state[s] for s in keys]) if len(keys) > 1 else state[keys[0]]
                  for k, keys in sources.items()}
    wrong_shape = sorted(k for k, v in native.items() if v.shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        parts = [f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong_shape)) if keys]
        raise CheckpointMismatch(f"{path} does not match the model ({'; '.join(parts)})")
    module.load_state_dict({k: v.to(dtype) for k, v in native.items()}, strict=True, assign=assign)

"""A vision tower through torch.compile on the CPU, for long indexing runs.

Eager bf16 runs each LayerNorm, RoPE rotation, SwiGLU gate and residual add as its own pass over memory; on the
full-size Nomic tower (batch 32, Intel Xeon with AMX, torch.profiler) those passes took 0.47 s of a 1.07 s
batch, as long as the matmuls. Inductor fuses them: 38.5-39.0 images/s against 29.2-30.4 eager, measured side
by side (bench/index_throughput.py --compile on).

What it costs, once per process: tracing and loading the compiled kernels, ~5 s from inductor's on-disk cache,
~30 s the first time on a machine (C++ compilation), which the cache then keeps. So the indexer compiles only
when a run has many photos to embed (indexer/pipeline.py COMPILE_FROM).

One graph serves every batch: the shapes are fixed at `batch_size` (a new batch size would compile again), so a
shorter batch is padded and a longer one split. The compiled tower is kept only where its output stays within
MIN_COSINE_TO_FP32 of the fp32 tower on the precision probe; that check is kept per weights file, torch and CPU
(models/precision_cache.py), so only the first compile on a machine builds the fp32 reference.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from core.errors import one_line

log = logging.getLogger("glance.models")

Tower = Callable[[torch.Tensor], torch.Tensor]  # pixels [B, 3, H, W] -> embeddings [B, D]


def cache_dir() -> Path:
    """Where inductor keeps what it compiled: $TORCHINDUCTOR_CACHE_DIR, else the user's cache folder (inductor's
    own default is under /tmp, which a reboot empties)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance" / "torchinductor"


class CompiledTower:
    """`tower` compiled for batches of exactly `batch_size`; called with any batch size."""

    def __init__(self, tower: Tower, batch_size: int):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir())  # read by inductor when it compiles
        self.batch_size = batch_size
        self._compiled = torch.compile(tower, dynamic=False, options={"post_grad_custom_post_pass": BiasAfterMatmul()})

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        parts = []
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start:start + self.batch_size]  # [b <= batch_size, 3, H, W]
            short = self.batch_size - len(batch)
            if short:
                batch = torch.cat([batch, batch.new_zeros((short, *batch.shape[1:]))])
            parts.append(self._compiled(batch)[:self.batch_size - short])
        return torch.cat(parts) if len(parts) > 1 else parts[0]


class BiasAfterMatmul(CustomGraphPass):
    """Inductor pass: every `addmm(bias, x, w)` becomes `mm(x, w) + bias`.

    On the CPU, inductor calls addmm as it is, which first copies the bias into every row of the output and then
    multiplies into it: one more pass over each linear layer's output, 64 ms of an 829 ms batch of 32 (full-size
    Nomic tower, torch.profiler). As a separate add, the bias joins the pointwise kernel that follows (RoPE, SwiGLU
    gate, residual add), which reads that output anyway: 794 ms a batch in the same profile. (Inductor
    does this itself only on GPUs: post_grad.should_prefer_unfused_addmm.)"""

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        for node in list(graph.find_nodes(op="call_function", target=aten.addmm.default)):
            if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
                continue
            bias, rows, weight = node.args
            with graph.inserting_before(node):
                product = graph.call_function(aten.mm.default, (rows, weight))
                summed = graph.call_function(aten.add.Tensor, (product, bias))
            # mm's output has addmm's shape, dtype and strides, so both new nodes carry its metadata
            product.meta.update(node.meta)
            summed.meta.update(node.meta)
            node.replace_all_uses_with(summed)
            graph.erase_node(node)

    def uuid(self) -> str:
        return get_hash_for_files((__file__,))


def compile_tower(tower: Tower, batch_size: int, probe: torch.Tensor, reference: Callable[[], torch.Tensor],
                  check_key: dict, min_cosine: float) -> CompiledTower | None:
    """`tower` compiled, or None where it cannot be here (no C++ compiler, an unsupported op) or strays from fp32.

    `probe` [n, 3, H, W] is run through the compiled tower (this first call compiles it); `reference()` gives
    the fp32 tower's output for it, computed only when `check_key` is not in the cache."""
    from .precision_cache import cached_value

    try:
        compiled = CompiledTower(tower, batch_size)
        with _quiet_compiler(), torch.inference_mode():
            got = compiled(probe).float()
    except Exception as exc:  # noqa: BLE001 - any failure to compile leaves the eager tower, which works
        reason = f"{type(exc).__name__}: {one_line(exc)}"[:200]  # inductor's errors quote whole compiler commands
        log.warning("torch.compile is not available here (%s); the vision model runs uncompiled", reason)
        return None
    cosine = cached_value(check_key, lambda: F.cosine_similarity(reference().float(), got).min().item())
    if cosine < min_cosine:
        log.warning("the compiled vision model strays from fp32 (cosine %.5f); it runs uncompiled", cosine)
        return None
    return compiled


class _quiet_compiler:
    """torch's C++ toolchain lookup warns that no CUDA runtime is found on every CPU-only machine: not news."""

    def __enter__(self):
        self._logger = logging.getLogger("torch.utils.cpp_extension")
        self._level, self._logger.level = self._logger.level, logging.ERROR

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)

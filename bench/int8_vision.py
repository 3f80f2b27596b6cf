"""Would an int8 Nomic vision tower index faster, within cosine 0.999 of fp32? (It was measured, and not added.)

Builds the full-size Nomic Embed Vision v1.5 architecture with random weights (models/synthetic.py), held in
bf16 as the indexer holds it, and measures side by side in one process, both through torch.compile at the
indexer's CPU batch:
  bf16:  the tower as `glance index` runs it (models/compiled.py);
  int8:  the same tower with the transformer blocks' linear layers (or only those named by --layers) in int8:
         weights quantized once per output channel, each token's activations quantized as they come (symmetric,
         one scale per token), torch._int_mm, then scaled back; compiled, so the quantizing and scaling fuse into
         the kernels around each matmul.
For each: images/s on a fixed batch and the lowest cosine to the fp32 tower over the precision probe (the bar
a path must clear to be kept: models/encoders.py MIN_COSINE_TO_FP32). It also times the raw matmuls at the
tower's shapes, bf16 against int8, to show what the int8 units could give.

Run from the repo root:
    python bench/int8_vision.py                       # all block linears in int8 (~3 minutes on 2 cores)
    python bench/int8_vision.py --layers Wqkv --json  # only the qkv projections
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nomic-tiny"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import core  # noqa: E402,F401 - its process settings come before torch, as in `glance index`
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from indexer.pipeline import auto_batch_size  # noqa: E402
from models import VisionEncoder  # noqa: E402
from models.compiled import CompiledTower  # noqa: E402
from models.device import cpu_name  # noqa: E402
from models.encoders import MIN_COSINE_TO_FP32  # noqa: E402
from models.synthetic import write_vision  # noqa: E402

BLOCK_LINEARS = ("Wqkv", "out_proj", "fc1", "fc2")


class Int8TokenLinear(nn.Module):
    """x W^T + b: W int8 per output channel, x quantized per token as it comes, int32 accumulation."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.data.float()  # [out, in]
        scales = weight.abs().amax(1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        self.register_buffer("weight_t", torch.round(weight / scales[:, None]).to(torch.int8).t().contiguous())
        self.register_buffer("scales", scales)  # [out]
        self.register_buffer("bias", None if linear.bias is None else linear.bias.data.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()  # [M, in]
        row_scales = rows.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127  # [M, 1]
        quantized = torch.round(rows / row_scales).to(torch.int8)
        out = torch._int_mm(quantized, self.weight_t).float() * row_scales * self.scales  # [M, out]
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], -1).to(x.dtype)


def quantize_blocks(model: nn.Module, kinds: tuple[str, ...]) -> int:
    """Swap the linear layers named `kinds` inside the transformer blocks for Int8TokenLinear; returns how many."""
    swapped = 0
    for block in model.layers:
        for parent in block.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and name in kinds:
                    setattr(parent, name, Int8TokenLinear(child))
                    swapped += 1
    return swapped


def images_per_second(tower, batch: torch.Tensor, rounds: int) -> float:
    with torch.inference_mode():
        tower(batch)  # warm-up (and, the first time, compiling)
        start = time.perf_counter()
        for _ in range(rounds):
            tower(batch)
    return len(batch) * rounds / (time.perf_counter() - start)


def matmul_speedups(tokens: int, hidden: int, inner: int) -> dict[str, float]:
    """int8 over bf16 matmul speed at each block linear's shape [tokens, in] x [in, out]."""
    def seconds(f) -> float:
        f()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - start)
        return best

    shapes = {"Wqkv": (hidden, 3 * hidden), "out_proj": (hidden, hidden), "fc1": (hidden, 2 * inner),
              "fc2": (inner, hidden)}
    out = {}
    for name, (k, n) in shapes.items():
        a, b = torch.randn(tokens, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
        qa, qb = torch.randint(-127, 128, (tokens, k), dtype=torch.int8), torch.randint(-127, 128, (k, n),
                                                                                           dtype=torch.int8)
        out[name] = round(seconds(lambda: a @ b) / seconds(lambda: torch._int_mm(qa, qb)), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default=",".join(BLOCK_LINEARS),
                        help=f"block linears to run in int8, comma-separated (default: {','.join(BLOCK_LINEARS)})")
    parser.add_argument("--rounds", type=int, default=6, help="timed batches per tower")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = tuple(k for k in args.layers.split(",") if k)
    if not kinds or set(kinds) - set(BLOCK_LINEARS):
        parser.error(f"--layers takes names from {', '.join(BLOCK_LINEARS)}")

    with tempfile.TemporaryDirectory() as tmp:
        weights = write_vision(Path(tmp) / "vision", size="full", dtype=torch.float32, template=TEMPLATE)
        vision = VisionEncoder(str(weights))
        cfg = vision.config
        batch_size = auto_batch_size(vision.preprocess, cfg.hidden, cfg.heads, cfg.patch_size)
        reference = vision._fp32_probe(weights / "model.safetensors")
    model, probe = vision.model, vision._probe
    batch = torch.randn(batch_size, 3, *vision.preprocess.input_size)

    def measure(label: str) -> dict:
        torch._dynamo.reset()  # a fresh graph for the tower as it is now
        tower = CompiledTower(model.embed, batch_size)
        with torch.inference_mode():
            cosine = F.cosine_similarity(reference, tower(probe).float()).min().item()
        return {"path": label, "images_per_s": round(images_per_second(tower, batch, args.rounds), 2),
                "cosine_to_fp32": round(cosine, 5)}

    bf16 = measure(vision.precision.path)
    swapped = quantize_blocks(model, kinds)
    int8 = measure("int8-per-token")
    tokens = batch_size * ((vision.preprocess.input_size[0] // cfg.patch_size) ** 2 + 1)
    result = {"cpu": cpu_name(), "batch_size": batch_size, "int8_layers": list(kinds), "int8_linears": swapped,
              "bf16": bf16, "int8": int8, "int8_speedup": round(int8["images_per_s"] / bf16["images_per_s"], 2),
              "int8_keeps_cosine": int8["cosine_to_fp32"] >= MIN_COSINE_TO_FP32,
              "matmul_int8_over_bf16": matmul_speedups(tokens, cfg.hidden, cfg.mlp_hidden)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['cpu']}, batch {batch_size}, compiled; int8 in {swapped} linears ({', '.join(kinds)})")
    for row in (bf16, int8):
        print(f"  {row['path']:>15}: {row['images_per_s']:6.2f} images/s, cosine to fp32 {row['cosine_to_fp32']:.5f}")
    keeps = "holds" if result["int8_keeps_cosine"] else "misses"
    print(f"  int8 / bf16: {result['int8_speedup']:.2f}x; it {keeps} the {MIN_COSINE_TO_FP32} bar")
    print("  raw matmul, int8 over bf16: " + ", ".join(f"{k} {v:.2f}x" for k, v in
                                                       result["matmul_int8_over_bf16"].items()))


if __name__ == "__main__":
    main()

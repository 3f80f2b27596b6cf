"""Where the models run: `--device auto|cpu|cuda`, and how much memory a batch may take there.

auto picks CUDA where torch sees a GPU, else the CPU. On a GPU the matmuls run in bf16 where the card has it
(Ampere and later) and fp16 otherwise, under the same cosine-to-fp32 probe as on the CPU. Decoding photos always
stays on CPU threads; only the tensors ready for the model move to the GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import GlanceError

if TYPE_CHECKING:  # torch is imported only once a model is really needed (an unchanged re-index never is)
    import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(GlanceError):
    """A device the user asked for that this machine or this torch build does not have."""


def check_device(requested: str) -> None:
    """Refuse a bad --device, or cuda where there is none, at once; torch is imported only for cuda."""
    if requested not in DEVICES:
        raise DeviceUnavailable(f"--device must be one of {', '.join(DEVICES)}, not {requested!r}")
    if requested == "cuda":
        resolve_device(requested)


def resolve_device(requested: str = "auto") -> torch.device:
    import torch

    if requested not in DEVICES:
        check_device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if requested == "cuda":
        raise DeviceUnavailable("--device cuda: torch sees no CUDA GPU here (no driver, no card, or a CPU-only "
                                "torch build); use --device cpu or auto")
    return torch.device("cpu")


def half_dtype(device: torch.device) -> torch.dtype:
    """The 16-bit type that device multiplies natively: bf16 on CPUs (where it is native at all) and on
    Ampere-or-later GPUs, fp16 on older GPUs."""
    import torch

    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def available_memory(device: torch.device | None = None) -> int:
    """Bytes free for activations: the GPU's free memory, or MemAvailable on the host."""
    if device is not None and device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def cpu_name() -> str:
    """The CPU's model name (Linux), for figures and cached choices that depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


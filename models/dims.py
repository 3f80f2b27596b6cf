"""Which embedding sizes a model supports (no torch: `glance eval` reads it without loading a model)."""
from __future__ import annotations

MATRYOSHKA_DIMS = (768, 512, 256, 128, 64)


def supported_dims(full: int, version: str) -> tuple[int, ...]:
    """The sizes a model of this release may embed at, largest first. Only Nomic Embed v1.5 was trained for
    Matryoshka sizes; v1 and CLIP-style models embed at full size only."""
    if version != "v1.5":
        return (full,)
    return tuple(sorted({full, *(d for d in MATRYOSHKA_DIMS if d < full)}, reverse=True))

"""The held-out split of an index's captioned photos: the photos `glance tune` never trains on, and on which
`glance eval --model` compares models.

The split is by photo, decided by a seeded hash of the photo's id: the same photo is held out on every run and
on every machine, whatever else the library gains or loses, so a photo once held out is never trained on later.
"""
from __future__ import annotations

import hashlib

HELD_OUT_FRACTION = 0.2
DEFAULT_SEED = 0


def is_held_out(photo_id: str, seed: int = DEFAULT_SEED, fraction: float = HELD_OUT_FRACTION) -> bool:
    digest = hashlib.sha256(f"glance-held-out\0{seed}\0{photo_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64


def held_out_ids(photo_ids, seed: int = DEFAULT_SEED, fraction: float = HELD_OUT_FRACTION) -> set[str]:
    return {photo_id for photo_id in photo_ids if is_held_out(photo_id, seed, fraction)}


VALIDATION_FRACTION = 0.1
TRAIN, VALIDATION, HELD_OUT = "train", "validation", "held_out"


def role(photo_id: str, seed: int = DEFAULT_SEED) -> str:
    """Where a photo goes in `glance tune`: held out (reported, never trained on), validation (early stopping,
    never trained on) or train. One hash decides all three, so the held-out set is exactly `is_held_out`'s."""
    if is_held_out(photo_id, seed):
        return HELD_OUT
    if is_held_out(photo_id, seed, HELD_OUT_FRACTION + VALIDATION_FRACTION):
        return VALIDATION
    return TRAIN

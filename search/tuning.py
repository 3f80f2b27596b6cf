"""The active tuning as search applies it (`glance tune` makes one; search/tune.py).

A tuning changes only how a text query reaches the photo space: the adapter maps each term's embedding by W q + b
(then back to unit length); a LoRA tuning embeds the term through the tuned text tower. Caption search (text against
caption texts) and image queries stay as they are: both compare vectors from one side of the space.

A tuning names the models it was trained for. One that does not belong to the index's models (copied from
another index, or left over from other models) is refused: search runs without it and says why.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from store import MODEL_KEYS, TUNING, Store


@dataclass(frozen=True)
class Tuning:
    name: str
    method: str
    info: dict
    tensors: dict[str, np.ndarray]

    def map_queries(self, vectors: list[np.ndarray]) -> list[np.ndarray]:
        """Adapter: q' = W q + b, unit length again (so query weights keep their meaning)."""
        weight, bias = self.tensors["weight"], self.tensors["bias"]
        mapped = [weight @ v + bias for v in vectors]
        return [m / max(float(np.linalg.norm(m)), 1e-12) for m in mapped]


def active(store: Store, meta: dict) -> tuple[Tuning | None, str | None]:
    """(the active tuning, None) or (None, why it is not used); (None, None) when there is none."""
    name = meta.get(TUNING)
    if not name:
        return None, None
    loaded = store.load_tuning(str(name))
    if loaded is None:
        return None, f"the active tuning {name} is missing or damaged in {store.path}; searching without it " \
                     f"(run `glance tune` again, or `glance tune --off`)"
    tensors, info = loaded
    made_for = info.get("models") or {}
    index_models = {key: meta.get(key) for key in MODEL_KEYS}
    if made_for != index_models:
        return None, (f"the active tuning {name} was made for {_models(made_for)}, but this index holds "
                      f"{_models(index_models)}: it is refused and search runs without it (run `glance tune` "
                      f"again, or `glance tune --off`)")
    return Tuning(str(name), str(info.get("method")), info, tensors), None


def _models(models: dict) -> str:
    return f"{models.get('vision_model')} + {models.get('text_model')} ({models.get('dim')}-d)"

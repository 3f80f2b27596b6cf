"""The index's caption model (`glance index --caption-model SPEC`): choosing it, and embedding every caption with it.

The captions table keeps a second vector per caption, `caption_vector`, while the index has a caption model.
Every caption write elsewhere leaves that column alone (new captions get NULL there); one step at the end of
each run embeds whatever is NULL. So a run killed at any point converges on re-run, and changing or adding a
caption model re-embeds only captions, never photos.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import store as st
from models.factory import load_caption_model, resolve_caption_model
from store import Store

from .rows import vector_column

NONE = "none"  # --caption-model none: drop the caption model and its vectors
FILL_BATCH = 512  # captions per read-embed-write round


@dataclass(frozen=True)
class CaptionChoice:
    """The caption model a run ends with (None: the index has none) and whether that changes the index."""
    model: object | None  # models.captioning.CaptionModelSpec
    changed: bool

    def meta(self) -> dict:
        if self.model is None:
            return {st.CAPTION_MODEL: None, st.CAPTION_DIM: None}
        return {st.CAPTION_MODEL: self.model.spec, st.CAPTION_DIM: self.model.dim}


def choose(meta: dict, flag: str | None) -> CaptionChoice:
    """The flag wins (`none` removes); otherwise the index keeps the caption model it records. Resolved (files
    found, checked safe) before the first row is written; nothing is loaded."""
    recorded = meta.get(st.CAPTION_MODEL)
    if flag == NONE or (flag is None and not recorded):
        return CaptionChoice(None, bool(recorded))
    model = resolve_caption_model(flag or recorded)
    return CaptionChoice(model, model.spec != recorded or meta.get(st.CAPTION_DIM) != model.dim)


def apply(store: Store, choice: CaptionChoice) -> None:
    """Make the captions table's column agree with the choice. The old column goes before meta names the new
    model, so a kill in between never leaves vectors of one model recorded as another's."""
    have = store.caption_vector_dim()
    wanted = choice.model.dim if choice.model is not None else None
    if have is not None and (choice.changed or have != wanted):
        store.drop_caption_vectors()
        have = None
    store.write_meta(choice.meta())
    if choice.model is not None and have is None:
        store.add_caption_vectors(choice.model.dim)


def fill(store: Store, choice: CaptionChoice, on_progress: Callable[[int], None] | None = None) -> int:
    """Embed every caption that has no caption vector yet; loads the model only when there is one. Returns how
    many were embedded."""
    if choice.model is None:
        return 0
    encoder, done = None, 0
    while True:
        todo = store.captions_without_caption_vector(FILL_BATCH)
        if not todo.num_rows:
            return done
        encoder = encoder or load_caption_model(choice.model)
        vectors = encoder.embed(todo["text"].to_pylist())
        store.set_caption_vectors(todo["id"].to_pylist(), vector_column(np.asarray(vectors), choice.model.dim))
        done += todo.num_rows
        if on_progress:
            on_progress(done)

"""`glance eval --model SPEC`: other models on the index's held-out photos, next to the index's own model on
exactly those photos, so a user sees which model suits their photos before re-indexing with one.

The photos are the held-out split (search/heldout.py: the captioned photos `glance tune` never trains on), or
every captioned photo when fewer than MIN_CAPTIONED_PHOTOS are held out (the report says so). Every model ranks
these photos among themselves: caption -> photo over the photos, photo -> caption over their caption texts.
The index's own model is scored the same way from its stored vectors, so the rows compare like with like.

A candidate model embeds the photos' original files in memory, opened and resized as the indexer does it, and
their captions as the indexer embeds captions; nothing is written anywhere. A photo whose file cannot be read
any more is left out of every row (and counted), so all rows still rank the same photos.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import UsageError
from core.images import LIBRARY_MAX_MEGAPIXELS, ImageRefused, describe_error, open_for_model
from models import (PRESETS, CheckpointMismatch, MismatchedModels, ModelSpec, ModelUnavailable, load_pair,
                    preprocess_of, resolve_pair)
from models.dims import supported_dims
from store import (DIM, MODEL_KEYS, MODEL_VERSION, TEXT_MODEL, Store, StoreError, display_name, no_index_message,
                   vector_matrix)

from . import evaluate
from .files import original_of_row
from .heldout import DEFAULT_SEED, HELD_OUT_FRACTION, is_held_out
from .results import NotServable

IMAGE_BATCH = 16
TEXT_BATCH = 64  # as the indexer embeds captions
PATH_LOOKUP_IDS = 1000  # ids per photo_paths query (one SQL IN list)
SKIPPED_EXAMPLES = 5
MAX_PIXELS = LIBRARY_MAX_MEGAPIXELS * 1_000_000  # the indexer's default limit: what an index normally holds


@dataclass(frozen=True)
class Candidate:
    """A model to compare: its files found, nothing loaded."""
    spec: str  # as given to --model
    vision: ModelSpec
    text: ModelSpec


@dataclass(frozen=True)
class HeldOut:
    """The photos every row ranks, with the index's stored vectors and the captions of those photos."""
    ids: list[str]
    captioned: int  # captioned photos in the index
    held_out: int  # of which held out
    photo_vectors: np.ndarray  # row i: ids[i]
    caption_photo_ids: list[str]
    caption_texts: list[str]
    caption_vectors: np.ndarray

    @property
    def all_captioned(self) -> bool:
        return self.held_out < evaluate.MIN_CAPTIONED_PHOTOS


@dataclass
class Embedded:
    """One candidate's vectors for the held-out photos it could read, and for their caption texts."""
    photos: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # photo id -> why it could not be read
    load_seconds: float = 0.0
    seconds: float = 0.0  # embedding the photos and texts, after loading


# ----- which models ------------------------------------------------------------------------------------------
def split_spec(spec: str) -> tuple[str, str | None]:
    """(vision, text or None) from one --model value. A preset, a Hub id or a folder is taken whole, as `glance
    index --model` takes it; Nomic ships its two towers as two folders (or repos), so VISION,TEXT names both."""
    if spec in PRESETS or Path(spec).expanduser().is_dir() or "," not in spec:
        return spec, None
    vision, text = (part.strip() for part in spec.split(",", 1))
    if not vision or not text or "," in text:
        raise UsageError(f"--model {spec}: give one model (a preset, Hub id or folder) or two as VISION,TEXT")
    return vision, text


def resolve_candidates(db: str | None, specs: list[str]) -> list[Candidate]:
    """Every --model resolved before anything is scored or loaded, so a missing one fails at once. A Nomic
    vision model given alone pairs with the index's text model, as `glance index --model` pairs it."""
    if not specs:
        return []
    store = Store(db)
    if not store.exists():
        raise StoreError(no_index_message(store.path))
    with store.lance_errors():
        fallback_text = store.meta().get(TEXT_MODEL)
    return [resolve_candidate(spec, fallback_text) for spec in dict.fromkeys(specs)]


def resolve_candidate(spec: str, fallback_text: str | None) -> Candidate:
    vision, text = split_spec(spec)
    try:
        return Candidate(spec, *resolve_pair(vision, text, fallback_text=fallback_text))
    except (ModelUnavailable, MismatchedModels, CheckpointMismatch) as exc:
        raise type(exc)(f"--model {spec}: {exc}") from None


# ----- which photos --------------------------------------------------------------------------------------------
def held_out_photos(view) -> HeldOut:
    """The held-out captioned photos (every captioned photo when too few are held out), sorted by id."""
    photos, captions = view.photo_vectors(), view.photo_caption_vectors()
    row_of_photo = {photo_id: row for row, photo_id in enumerate(photos["id"].to_pylist())}
    caption_photo_ids = captions["image_id"].to_pylist()
    captioned = sorted(set(caption_photo_ids) & row_of_photo.keys())
    held = [photo_id for photo_id in captioned if is_held_out(photo_id, DEFAULT_SEED)]
    ids = held if len(held) >= evaluate.MIN_CAPTIONED_PHOTOS else captioned
    chosen = set(ids)
    keep = [row for row, photo_id in enumerate(caption_photo_ids) if photo_id in chosen]
    texts = captions["text"].to_pylist()
    return HeldOut(ids, len(captioned), len(held),
                   vector_matrix(photos["vector"])[[row_of_photo[photo_id] for photo_id in ids]],
                   [caption_photo_ids[row] for row in keep], [texts[row] for row in keep],
                   vector_matrix(captions["vector"])[keep])


def locate(view, ids: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """(id -> original file, strictly inside its indexed root; id -> why it cannot be reached)."""
    rows = {}
    for start in range(0, len(ids), PATH_LOOKUP_IDS):
        rows.update(view.photo_paths(ids[start:start + PATH_LOOKUP_IDS]))
    found, missing = {}, {}
    for photo_id in ids:
        try:
            found[photo_id] = original_of_row(view, rows[photo_id])
        except NotServable as exc:
            missing[photo_id] = str(exc)
    return found, missing


# ----- embedding in memory ---------------------------------------------------------------------------------------
def model_pixels(path: Path, preprocess) -> Image.Image:
    """A photo as the indexer hands it to the model (indexer/decode.py): drafted, then the model's resize."""
    shown = display_name(str(path))
    image = open_for_model(path, preprocess.input_size, max_pixels=MAX_PIXELS, name=shown,
                           limit_hint="the indexer's default limit")
    try:
        with image:
            return preprocess.resize(image)
    except MemoryError:
        raise ImageRefused(shown, "not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - a file damaged since it was indexed is skipped, never a traceback
        raise ImageRefused(shown, f"damaged or truncated ({describe_error(exc)})") from None


def embed_candidate(candidate: Candidate, held: HeldOut, files: dict[str, Path], missing: dict[str, str],
                    precision: str, progress: bool) -> Embedded:
    started = time.perf_counter()
    vision, text = load_pair(candidate.vision, candidate.text, precision)
    result = Embedded(skipped=dict(missing), load_seconds=time.perf_counter() - started)
    started = time.perf_counter()
    embed_photos(vision, preprocess_of(candidate.vision), files, result, progress_bar(candidate, len(files), progress))
    result.texts = embed_texts(text, sorted(set(held.caption_texts)))
    result.seconds = time.perf_counter() - started
    return result


def embed_texts(text, texts: list[str]) -> dict[str, np.ndarray]:
    """embed_captions, not embed_queries: the index embedded its captions so, and the rows must compare."""
    vectors = {}
    for start in range(0, len(texts), TEXT_BATCH):
        batch = texts[start:start + TEXT_BATCH]
        vectors.update(zip(batch, text.embed_captions(batch).float().numpy()))
    return vectors


def embed_photos(vision, preprocess, files: dict[str, Path], result: Embedded, bar) -> None:
    ids, pixels = [], []

    def embed_batch():
        result.photos.update(zip(ids, vision.embed_pixels(preprocess.to_tensor(pixels)).float().numpy()))
        bar.update(len(ids))
        ids.clear()
        pixels.clear()

    with bar:
        for photo_id, path in files.items():
            try:
                pixels.append(model_pixels(path, preprocess))
                ids.append(photo_id)
            except ImageRefused as exc:
                result.skipped[photo_id] = str(exc)
                bar.update(1)
            if len(pixels) == IMAGE_BATCH:
                embed_batch()
        if pixels:
            embed_batch()


def progress_bar(candidate: Candidate, total: int, shown: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", desc=f"embedding ({candidate.spec})", file=sys.stderr,
                disable=not shown, dynamic_ncols=True, mininterval=0.5)


# ----- scoring ---------------------------------------------------------------------------------------------------
def pairs_for(ids: list[str], photo_vectors: np.ndarray, held: HeldOut, caption_vectors: np.ndarray) -> evaluate.Pairs:
    return evaluate.build_pairs(ids, photo_vectors, held.caption_photo_ids, held.caption_texts, caption_vectors)


def index_section(meta: dict, held: HeldOut, kept: list[str], resamples: int, seed: int) -> dict:
    row_of = {photo_id: row for row, photo_id in enumerate(held.ids)}
    pairs = pairs_for(kept, held.photo_vectors[[row_of[i] for i in kept]], held, held.caption_vectors)
    dims = supported_dims(int(meta.get(DIM) or pairs.photos.shape[1]), str(meta.get(MODEL_VERSION) or ""))
    return {"split_seed": DEFAULT_SEED, "fraction": HELD_OUT_FRACTION, "captioned_photos": held.captioned,
            "held_out_photos": held.held_out, "all_captioned": held.all_captioned, "photos": len(kept),
            "skipped": len(held.ids) - len(kept), **counts(pairs), **{key: meta.get(key) for key in MODEL_KEYS},
            "rows": evaluate.evaluate(pairs, dims, resamples, seed)}


def model_section(candidate: Candidate, embedded: Embedded, held: HeldOut, kept: list[str], resamples: int,
                  seed: int) -> dict:
    pairs = pairs_for(kept, np.stack([embedded.photos[i] for i in kept]), held,
                      np.stack([embedded.texts[t] for t in held.caption_texts]))
    read = len(embedded.photos)
    return {"spec": candidate.spec, "family": candidate.vision.family, "vision_model": candidate.vision.spec,
            "text_model": candidate.text.spec, "model_version": candidate.text.version, "dim": candidate.text.dim,
            "photos": len(kept), "skipped": len(embedded.skipped),
            "skipped_examples": list(embedded.skipped.values())[:SKIPPED_EXAMPLES],
            "load_seconds": round(embedded.load_seconds, 2), "seconds": round(embedded.seconds, 2),
            "photos_per_s": round(read / max(embedded.seconds, 1e-9), 1),
            **counts(pairs), "rows": evaluate.evaluate(pairs, supported_dims(candidate.text.dim,
                                                                             candidate.text.version), resamples, seed)}


def counts(pairs: evaluate.Pairs) -> dict:
    return {"caption_texts": len(pairs.texts), "pairs": len(pairs.pair_text),
            "queries": {"caption_to_photo": len(pairs.texts), "photo_to_caption": len(pairs.captioned_photos)}}


def run(db: str | None, candidates: list[Candidate], seed: int = 0, resamples: int = evaluate.RESAMPLES,
        precision: str = "auto", progress: bool = False) -> dict:
    """{"held_out": the index's own model on the held-out photos, "models": each candidate on the same photos}."""
    store = Store(db)
    with store.lance_errors():
        view = store.pinned()
        meta = view.current_meta()
        held = held_out_photos(view)
        files, missing = locate(view, held.ids)
    embedded = [embed_candidate(c, held, files, missing, precision, progress) for c in candidates]
    kept = [photo_id for photo_id in held.ids if all(photo_id in e.photos for e in embedded)]
    check_enough_read(held, kept, embedded)
    return {"held_out": index_section(meta, held, kept, resamples, seed),
            "models": [model_section(c, e, held, kept, resamples, seed) for c, e in zip(candidates, embedded)]}


def check_enough_read(held: HeldOut, kept: list[str], embedded: list[Embedded]) -> None:
    if len(kept) >= evaluate.MIN_CAPTIONED_PHOTOS:
        return
    why = next((reason for e in embedded for reason in e.skipped.values()), "")
    raise UsageError(f"only {len(kept)} of the {len(held.ids)} held-out photos could be read ({why}); comparing "
                     f"models needs at least {evaluate.MIN_CAPTIONED_PHOTOS}: is the photo folder there?")


# ----- the table -------------------------------------------------------------------------------------------------
def report_text(report: dict) -> str:
    held = report["held_out"]
    lines = [split_line(held)]
    if held["skipped"]:
        lines.append(f"skipped: {held['skipped']} of them could not be read and are left out of every row")
    lines += ["", f"index's own model, from its stored vectors: {held['vision_model']} + {held['text_model']} "
                  f"({held['model_version']}, dim {held['dim']})", *section_lines(held)]
    for model in report["models"]:
        lines += ["", f"--model {model['spec']}: {model['vision_model']} + {model['text_model']} ({model['family']}, "
                      f"{model['model_version']}, dim {model['dim']}), loaded in {model['load_seconds']:.1f} s, "
                      f"embedded in {model['seconds']:.1f} s ({model['photos_per_s']:g} photos/s)",
                  *section_lines(model)]
        lines += [f"  skipped: {reason}" for reason in model["skipped_examples"]]
    return "\n".join(lines)


def split_line(held: dict) -> str:
    if held["all_captioned"]:
        return (f"held-out photos: only {held['held_out_photos']} of the {held['captioned_photos']} captioned photos "
                f"are held out (fewer than {evaluate.MIN_CAPTIONED_PHOTOS}), so every captioned photo is used: "
                f"{held['photos']} photos, ranked among themselves")
    return (f"held-out photos: {held['held_out_photos']} of the {held['captioned_photos']} captioned photos (the "
            f"{held['fraction']:.0%} that `glance tune` never trains on, seed {held['split_seed']}), ranked among "
            f"themselves")


def section_lines(section: dict) -> list[str]:
    heading = f"  {'dim':>5}  " + "".join(f"{m:<18}" for m in evaluate.METRICS)
    lines = []
    for direction in evaluate.DIRECTIONS:
        lines += [f"  {direction.replace('_to_', ' -> ').replace('_', ' ')}: {section['queries'][direction]} queries",
                  heading.rstrip()]
        lines += [f"  {row['dim']:>5}  " + "".join(f"{evaluate.figure(row[direction][m]):<18}"
                                                   for m in evaluate.METRICS).rstrip() for row in section["rows"]]
    return lines

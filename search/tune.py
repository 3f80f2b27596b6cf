"""`glance tune`: contrastive adaptation of text queries to the index's own captioned photos.

The photo vectors stay as they are (nothing is re-embedded). What is learned maps a text query into the photo
space a little better for *these* photos:

* adapter (default): an affine map q' = W q + b, initialised to the identity, applied to each text-query
  embedding before photo search. It learns from the stored caption vectors, so training never runs a model.
* lora (search/tune_lora.py): LoRA adapters on the text tower (LiT-style: the image side stays locked).

Both are trained with a symmetric InfoNCE loss between captions and the stored photo vectors, with a learned
temperature, in-batch negatives and mined hard negatives: for each caption, the photos the current map ranks
highest that are not its own. The false-negative filter (NV-Embed-v2's positive-aware mining) drops a mined
photo that is a near-duplicate of a positive, or that scores above 95% of the positive's score; a photo that
shares the caption is a positive, never a negative.

Photos are split by a seeded hash (search/heldout.py): held-out photos are never trained on and give the figures
reported before and after; validation photos, also never trained on, decide early stopping. A tuning that does
not beat the base on the held-out photos is saved but kept off.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from core.errors import UsageError
from store import MODEL_KEYS, TUNING, Store, StoreError, no_index_message, vector_matrix

from . import heldout
from .evaluate import KS, Pairs, build_pairs, first_positive_ranks, per_query_metrics, unit

MIN_TRAIN_PHOTOS = 20
MIN_HELD_OUT_PHOTOS = 5
BATCH = 256
HARD_NEGATIVES = 4  # mined per caption, shared across the batch as extra negatives
NEAR_DUPLICATE_COSINE = 0.98  # a mined photo this close to a positive is the same picture: not a negative
POSITIVE_AWARE_MARGIN = 0.95  # NV-Embed-v2: a negative scoring above 95% of the positive may be a true match
MINING_POOL = 8192  # training photos hard negatives are mined from, drawn afresh each epoch
MINING_BLOCK = 2048  # texts scored against the pool at once ([block, pool] float32: 64 MB)
MAX_EPOCHS = 100
# Early stopping waits this many optimiser steps without a better validation MRR (25 epochs of a few hundred
# photos, where validation is a few dozen photos and noisy; 2-3 epochs of 10,000, where it is a thousand), and
# never fewer than MIN_PATIENCE_EPOCHS epochs.
PATIENCE_STEPS = 50
MIN_PATIENCE_EPOCHS = 3
LEARNING_RATE = 1e-2
INITIAL_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0
METHODS = ("adapter", "lora")


@dataclass(frozen=True)
class Split:
    """The index's captioned photos by role, each as the pairs of its own photos (candidates: those photos)."""
    train: Pairs
    validation: Pairs
    held_out: Pairs
    train_ids: list[str]
    held_out_ids: list[str]
    validation_ids: list[str]
    texts: dict[str, list[str]]  # role -> its caption texts, row order of that role's Pairs.texts

    def sizes(self) -> dict:
        return {role: {"photos": len(getattr(self, role).photos), "caption_texts": len(getattr(self, role).texts),
                       "pairs": len(getattr(self, role).pair_text)}
                for role in (heldout.TRAIN, heldout.VALIDATION, heldout.HELD_OUT)}


def split_pairs(photo_ids: list[str], photo_vectors: np.ndarray, caption_photo_ids: list[str],
                caption_texts: list[str], caption_vectors: np.ndarray, seed: int) -> Split:
    """Only captioned photos take part: an uncaptioned photo has nothing to learn from and no query to answer."""
    captioned = set(caption_photo_ids)
    rows = {role: [] for role in (heldout.TRAIN, heldout.VALIDATION, heldout.HELD_OUT)}
    for row, photo_id in enumerate(photo_ids):
        if photo_id in captioned:
            rows[heldout.role(photo_id, seed)].append(row)
    pairs, ids, texts = {}, {}, {}
    for role, chosen in rows.items():
        ids[role] = [photo_ids[r] for r in chosen]
        pairs[role], texts[role] = _pairs_of(ids[role], photo_vectors[chosen], caption_photo_ids, caption_texts,
                                             caption_vectors)
    return Split(pairs[heldout.TRAIN], pairs[heldout.VALIDATION], pairs[heldout.HELD_OUT], ids[heldout.TRAIN],
                 ids[heldout.HELD_OUT], ids[heldout.VALIDATION], texts)


def _pairs_of(ids, vectors, caption_photo_ids, caption_texts, caption_vectors) -> tuple[Pairs, list[str]]:
    keep = set(ids)
    rows = [i for i, photo_id in enumerate(caption_photo_ids) if photo_id in keep]
    texts = [caption_texts[i] for i in rows]
    pairs = build_pairs(ids, vectors.reshape(-1, caption_vectors.shape[1]), [caption_photo_ids[i] for i in rows],
                        texts, caption_vectors[rows])
    return pairs, list(dict.fromkeys(texts))  # build_pairs numbers texts in order of first appearance


def load_split(store: Store, seed: int) -> tuple[Split, dict]:
    if not store.exists():
        raise StoreError(no_index_message(store.path))
    with store.lance_errors():
        view = store.pinned()
        meta = view.current_meta()
        photos, captions = view.photo_vectors(), view.photo_caption_vectors()
    split = split_pairs(photos["id"].to_pylist(), vector_matrix(photos["vector"]), captions["image_id"].to_pylist(),
                        captions["text"].to_pylist(), vector_matrix(captions["vector"]), seed)
    check_enough(split, store)
    return split, meta


def check_enough(split: Split, store: Store) -> None:
    sizes = split.sizes()
    trained, held = sizes[heldout.TRAIN]["photos"], sizes[heldout.HELD_OUT]["photos"]
    if trained < MIN_TRAIN_PHOTOS or held < MIN_HELD_OUT_PHOTOS or not sizes[heldout.VALIDATION]["photos"]:
        total = sum(s["photos"] for s in sizes.values())
        raise UsageError(f"only {total} captioned photos in the index at {store.path}; tuning needs about "
                         f"{int(MIN_TRAIN_PHOTOS / (1 - heldout.HELD_OUT_FRACTION - heldout.VALIDATION_FRACTION))} "
                         f"or more, so that {MIN_TRAIN_PHOTOS} train and {MIN_HELD_OUT_PHOTOS} are held out")


# ----- figures -------------------------------------------------------------------------------------------------
def caption_to_photo(pairs: Pairs, queries: np.ndarray) -> dict:
    """recall@1/5/10 and MRR of these (mapped) caption queries over the pairs' own photos."""
    ranks = first_positive_ranks(unit(queries), pairs.photos, pairs.pair_text, pairs.pair_photo)
    values = per_query_metrics(ranks).mean(axis=1)
    names = [*(f"recall@{k}" for k in KS), "mrr"]
    return {**{name: float(v) for name, v in zip(names, values)}, "queries": len(queries),
            "candidates": len(pairs.photos)}


def better(tuned: dict, base: dict) -> bool:
    """Beats the base: a higher recall@5 with an MRR no lower, or the same recall@5 with a higher MRR."""
    return (tuned["recall@5"], tuned["mrr"]) > (base["recall@5"], base["mrr"]) and tuned["mrr"] >= base["mrr"]


# ----- training ------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """What one epoch did, for the progress bar and the report."""
    epoch: int
    loss: float
    validation: dict
    best_epoch: int


@dataclass
class Trained:
    tensors: dict[str, np.ndarray]
    epochs: int
    best_epoch: int
    temperature: float
    history: list[dict] = field(default_factory=list)


class ContrastiveTrainer(ABC):
    """Symmetric InfoNCE with in-batch and mined hard negatives, early stopping on the validation photos.

    `encode(text_rows)` gives the (differentiable, torch) query vectors of training caption texts; the subclass
    (linear adapter, LoRA) decides what they pass through, `state()` what is saved, `queries(role)` the numpy
    query vectors of a role's texts with the current parameters."""

    def __init__(self, split: Split, seed: int, parameters: list, learning_rate: float | None = None):
        import torch

        self.torch = torch
        self.split = split
        self.generator = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.photos = torch.from_numpy(split.train.photos)
        self.log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / INITIAL_TEMPERATURE))))
        self.learning_rate = learning_rate or self.learning_rate
        self.optimizer = torch.optim.Adam([{"params": parameters, "lr": self.learning_rate},
                                          {"params": [self.log_scale], "lr": LEARNING_RATE}])
        pairs = split.train
        self.pair_keys = np.sort(pairs.pair_text * len(pairs.photos) + pairs.pair_photo)
        self.never_negative = self.positives_and_near_duplicates()
        self.hard = np.full((len(pairs.texts), 0), -1, np.int64)  # per text: mined negative photo rows

    learning_rate = LEARNING_RATE
    torch_threads: int | None = None  # None: torch's default
    batch = BATCH

    # subclasses -------------------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, text_rows: np.ndarray):
        ...

    @abstractmethod
    def queries(self, role: str) -> np.ndarray:
        ...

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        ...

    @abstractmethod
    def restore(self, state: dict[str, np.ndarray]) -> None:
        ...

    def describe(self) -> dict:
        return {"hard_negatives": HARD_NEGATIVES, "learning_rate": self.learning_rate}

    # the loop ---------------------------------------------------------------------------------------------
    def fit(self, max_epochs: int = MAX_EPOCHS, patience: int | None = None, on_epoch=None) -> Trained:
        from .vectors import torch_threads

        with torch_threads(self.torch_threads or self.torch.get_num_threads()):
            return self._fit(max_epochs, patience, on_epoch)

    def _fit(self, max_epochs: int, patience: int | None, on_epoch) -> Trained:
        steps_per_epoch = -(-len(self.split.train.pair_text) // self.batch)
        patience = patience or max(MIN_PATIENCE_EPOCHS, -(-PATIENCE_STEPS // steps_per_epoch))
        best = caption_to_photo(self.split.validation, self.queries(heldout.VALIDATION))
        best_state, best_epoch, history = self.state(), 0, []
        epoch = 0
        for epoch in range(1, max_epochs + 1):
            if epoch > 1:
                self.hard = self.mine()
            loss = self.epoch()
            figures = caption_to_photo(self.split.validation, self.queries(heldout.VALIDATION))
            history.append({"epoch": epoch, "loss": loss, "validation": figures})
            if figures["mrr"] > best["mrr"]:  # MRR moves with every rank, recall@k only at its cut-off
                best, best_state, best_epoch = figures, self.state(), epoch
            if on_epoch:
                on_epoch(Progress(epoch, loss, figures, best_epoch))
            if epoch - best_epoch >= patience:
                break
        self.restore(best_state)
        return Trained(best_state, epoch, best_epoch, float(1 / self.logit_scale().item()), history)

    def logit_scale(self):
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def epoch(self) -> float:
        """One pass over the training pairs in shuffled batches; returns the mean loss."""
        pairs = self.split.train
        order = self.generator.permutation(len(pairs.pair_text))
        losses = []
        for start in range(0, len(order), self.batch):
            chosen = self.distinct(order[start:start + self.batch])
            if len(chosen) < 2:
                continue
            loss = self.loss(pairs.pair_text[chosen], pairs.pair_photo[chosen])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.item()))
        return float(np.mean(losses)) if losses else 0.0

    def distinct(self, chosen: np.ndarray) -> np.ndarray:
        """A batch uses each caption text once (its other photos are in-batch positives, masked below)."""
        _, first = np.unique(self.split.train.pair_text[chosen], return_index=True)
        return chosen[np.sort(first)]

    def loss(self, text_rows: np.ndarray, photo_rows: np.ndarray):
        torch = self.torch
        queries = torch.nn.functional.normalize(self.encode(text_rows), dim=-1)  # [B, dim]
        extra = np.setdiff1d(np.unique(self.hard[text_rows]), np.append(photo_rows, -1))
        candidates = np.concatenate([photo_rows, extra])  # batch photos first: the diagonal is the positive
        logits = self.logit_scale() * queries @ self.photos[candidates].T  # [B, B + mined]
        positive = torch.from_numpy(self.is_pair(text_rows[:, None], candidates[None, :]))
        diagonal = torch.zeros_like(positive)
        diagonal[:, :len(photo_rows)] = torch.eye(len(photo_rows), dtype=torch.bool)
        masked = positive & ~diagonal  # another photo of the same caption is not a negative
        targets = torch.arange(len(text_rows))
        to_photo = torch.nn.functional.cross_entropy(logits.masked_fill(masked, float("-inf")), targets)
        square = logits[:, :len(photo_rows)].T.masked_fill(masked[:, :len(photo_rows)].T, float("-inf"))
        to_text = torch.nn.functional.cross_entropy(square, targets)  # [B photos, B texts]
        return (to_photo + to_text) / 2

    def is_pair(self, text_rows: np.ndarray, photo_rows: np.ndarray) -> np.ndarray:
        keys = text_rows * len(self.split.train.photos) + photo_rows
        found = np.searchsorted(self.pair_keys, keys).clip(max=len(self.pair_keys) - 1)
        return self.pair_keys[found] == keys

    def positives_and_near_duplicates(self) -> np.ndarray:
        """Sorted keys (text row x photos + photo row) of the (text, photo) pairs never to use as a negative: a
        text's own photos, and every photo that is a near-duplicate of one of them. Near-duplicates are few, so
        the keys stay a short list even where photos x photos would not fit in memory."""
        pairs = self.split.train
        photos = pairs.photos
        twins = []  # (photo, its near-duplicate), both directions, found in blocks of photos
        for start in range(0, len(photos), MINING_BLOCK):
            close = photos[start:start + MINING_BLOCK] @ photos.T >= NEAR_DUPLICATE_COSINE
            rows, columns = np.nonzero(close)
            twins.append(np.stack([rows + start, columns], axis=1))
        twins = np.concatenate(twins)
        twins = twins[twins[:, 0] != twins[:, 1]]
        twins = twins[np.argsort(twins[:, 0], kind="stable")]
        low, high = np.searchsorted(twins[:, 0], pairs.pair_photo), np.searchsorted(twins[:, 0], pairs.pair_photo,
                                                                                     side="right")
        counts = high - low
        starts = np.repeat(low - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        texts = np.concatenate([pairs.pair_text, np.repeat(pairs.pair_text, counts)])
        blocked = np.concatenate([pairs.pair_photo, twins[starts, 1]])
        return np.unique(texts * len(photos) + blocked)

    def mine(self) -> np.ndarray:
        """Per training text, the HARD_NEGATIVES highest-scoring photos that pass the false-negative filter, from
        a fresh random pool of at most MINING_POOL training photos (all of them in smaller libraries), scored in
        blocks of texts so memory stays bounded at any library size."""
        pairs = self.split.train
        queries = unit(self.queries(heldout.TRAIN))
        best_positive = np.full(len(pairs.texts), -np.inf, np.float32)
        np.maximum.at(best_positive, pairs.pair_text,
                      np.einsum("ij,ij->i", queries[pairs.pair_text], pairs.photos[pairs.pair_photo]))
        pool = np.arange(len(pairs.photos))
        if len(pool) > MINING_POOL:
            pool = np.sort(self.generator.choice(pool, MINING_POOL, replace=False))
        hard = np.full((len(pairs.texts), min(HARD_NEGATIVES, len(pool))), -1, np.int64)
        for start in range(0, len(pairs.texts), MINING_BLOCK):
            stop = min(start + MINING_BLOCK, len(pairs.texts))
            scores = queries[start:stop] @ pairs.photos[pool].T  # [block texts, pool]
            scores[scores > POSITIVE_AWARE_MARGIN * best_positive[start:stop, None]] = -np.inf
            self._block_never_negatives(scores, start, stop, pool)
            hard[start:stop] = _top_allowed(scores, pool, hard.shape[1])
        return hard

    def _block_never_negatives(self, scores: np.ndarray, start: int, stop: int, pool: np.ndarray) -> None:
        """-inf where (text, pool photo) is a positive or a near-duplicate of one, for texts start..stop."""
        photos = len(self.split.train.photos)
        low, high = np.searchsorted(self.never_negative, [start * photos, stop * photos])
        keys = self.never_negative[low:high]
        columns = np.searchsorted(pool, keys % photos).clip(max=len(pool) - 1)
        found = pool[columns] == keys % photos
        scores[keys[found] // photos - start, columns[found]] = -np.inf


def _top_allowed(scores: np.ndarray, pool: np.ndarray, count: int) -> np.ndarray:
    """Per row, the pool photos of the `count` best finite scores (unordered; -1 where fewer are left)."""
    if count == 0:
        return np.zeros((len(scores), 0), np.int64)
    top = np.argpartition(-scores, count - 1, axis=1)[:, :count]  # no full sort of the pool
    return np.where(np.isfinite(np.take_along_axis(scores, top, axis=1)), pool[top], -1)


class AdapterTrainer(ContrastiveTrainer):
    """q' = q + A (q - mean), A initialised to 0 (the identity map): no model runs while training.

    Centring on the training captions' mean matters: caption vectors share a large common part (the prefix, the
    style of the captions), and a map of the raw vectors spends its first epochs learning to ignore it (measured
    on the tests' generated library: held-out recall@5 0.17 without centring, 0.73 with it, in as many epochs).
    Saved as the affine map search applies, q' = W q + b, with W = I + A and b = -A mean."""

    # Its steps are small matrix products: a second torch thread gains nothing, and on a busy machine the threads
    # wait on each other (10k photos, 2 cores under load: 7 ms per backward pass on one thread, 180 ms on two).
    torch_threads = 1

    def __init__(self, split: Split, seed: int, learning_rate: float | None = None):
        import torch

        dim = split.train.photos.shape[1]
        self.change = torch.nn.Parameter(torch.zeros(dim, dim))
        self.text_vectors = {role: torch.from_numpy(getattr(split, role).texts)
                             for role in (heldout.TRAIN, heldout.VALIDATION, heldout.HELD_OUT)}
        self.mean = self.text_vectors[heldout.TRAIN].mean(dim=0)  # [dim]
        super().__init__(split, seed, [self.change], learning_rate)

    def encode(self, text_rows: np.ndarray):
        return self._mapped(self.text_vectors[heldout.TRAIN][text_rows])  # [B, dim]

    def _mapped(self, vectors):
        return vectors + (vectors - self.mean) @ self.change.T

    def queries(self, role: str) -> np.ndarray:
        with self.torch.no_grad():
            return self._mapped(self.text_vectors[role]).numpy()

    def state(self) -> dict[str, np.ndarray]:
        change = self.change.detach()
        return {"weight": (self.torch.eye(len(change)) + change).numpy(), "bias": (-change @ self.mean).numpy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        with self.torch.no_grad():
            weight = self.torch.from_numpy(state["weight"])
            self.change.copy_(weight - self.torch.eye(len(weight)))

    def describe(self) -> dict:
        return {**super().describe(), "dim": int(self.change.shape[0])}


def trainer_for(method: str, split: Split, meta: dict, seed: int, store: Store,
                learning_rate: float | None = None) -> ContrastiveTrainer:
    if method == "adapter":
        trainer = AdapterTrainer(split, seed, learning_rate)
    else:
        from .tune_lora import LoraTrainer  # peft and the text model: only for this method

        trainer = LoraTrainer(split, meta, seed, store.path, learning_rate)
    return trainer


# ----- the command ---------------------------------------------------------------------------------------------
def run(db: str | None, method: str = "adapter", seed: int = heldout.DEFAULT_SEED, max_epochs: int = MAX_EPOCHS,
        learning_rate: float | None = None, progress: bool = False) -> dict:
    """Train, compare with the base on the held-out photos, save, and switch on when better. The report is
    what `glance tune --json` prints."""
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}")
    started = time.monotonic()
    store = Store(db)
    split, meta = load_split(store, seed)
    models = {key: meta.get(key) for key in MODEL_KEYS}
    trainer = trainer_for(method, split, meta, seed, store, learning_rate)
    base = caption_to_photo(split.held_out, trainer.queries(heldout.HELD_OUT))
    with progress_bar(progress, max_epochs) as on_epoch:
        trained = trainer.fit(max_epochs, on_epoch=on_epoch)
    tuned = caption_to_photo(split.held_out, trainer.queries(heldout.HELD_OUT))
    active = better(tuned, base)
    name = f"{method}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
    info = {"name": name, "method": method, "models": models, "created_at": _now(), "seed": seed,
            "split": split.sizes(), "held_out": {"base": base, "tuned": tuned}, "epochs": trained.epochs,
            "best_epoch": trained.best_epoch, "temperature": trained.temperature,
            "better_than_base": active, **trainer.describe()}
    with store.lance_errors():
        store.save_tuning(name, trained.tensors, info)
        if active:
            store.set_active_tuning(name)
    return {"db": str(store.path), **info, "active": active,
            "active_tuning": name if active else store.active_tuning_name(), "seconds": time.monotonic() - started}


def switch_off(db: str | None) -> dict:
    store = Store(db)
    if not store.exists():
        raise StoreError(no_index_message(store.path))
    with store.lance_errors():
        was = store.meta().get(TUNING)
        store.set_active_tuning(None)
    return {"db": str(store.path), "active_tuning": None, "switched_off": was}


class progress_bar:
    """A tqdm bar over epochs on stderr (early stopping usually ends it before max_epochs)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        import sys

        from tqdm import tqdm

        self.bar = tqdm(total=self.total, unit="epoch", desc="tuning", file=sys.stderr, disable=not self.enabled,
                        dynamic_ncols=True)
        return self.update

    def update(self, step: Progress) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{step.loss:.3f}", val_r5=f"{step.validation['recall@5']:.3f}",
                             best=step.best_epoch, refresh=False)

    def __exit__(self, *exc):
        self.bar.close()
        return False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def report_text(report: dict) -> str:
    base, tuned = report["held_out"]["base"], report["held_out"]["tuned"]
    held = report["split"][heldout.HELD_OUT]
    lines = [f"index: {report['db']}",
             f"tuning: {report['name']} ({report['method']}), {report['epochs']} epochs, best at epoch "
             f"{report['best_epoch']}, temperature {report['temperature']:.4f}",
             "photos: " + ", ".join(f"{report['split'][role]['photos']} {role.replace('_', '-')}"
                                    for role in (heldout.TRAIN, heldout.VALIDATION, heldout.HELD_OUT)),
             f"held-out caption -> photo: {base['queries']} captions over {held['photos']} photos never trained on",
             f"{'':>8} {'recall@1':>9} {'recall@5':>9} {'recall@10':>10} {'mrr':>7}"]
    for label, figures in (("base", base), ("tuned", tuned)):
        lines.append(f"{label:>8} {figures['recall@1']:>9.3f} {figures['recall@5']:>9.3f} "
                     f"{figures['recall@10']:>10.3f} {figures['mrr']:>7.3f}")
    if report["active"]:
        lines.append(f"active: search now uses this tuning (glance search --no-tuning skips it for one query; "
                     f"glance tune --off switches it off); {report['seconds']:.1f} s")
    else:
        lines.append(f"kept off: it does not beat the base on the held-out photos (saved as {report['name']}); "
                     f"active tuning: {report['active_tuning'] or 'none'}")
    return "\n".join(lines)

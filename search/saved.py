"""Saved searches: a query (text, query image or liked photos, filters, sort) kept under a name in the index
folder, so the page, `glance saved` and the API list and re-run the same searches. A saved search keeps the
question, not its answer: running it searches the index as it is now, so it stays live after every update.

The searches live in SAVED_FILE inside the index folder, as JSON, written whole to a temporary file and renamed
over the old one under an flock (two servers saving at once both keep their search). A query image is kept
beside it (saved-images/<sha256>), since the upload it came from is temporary. An index in object storage
keeps none: saving there is refused with a one-line reason.

    SavedSearches(store).save(Saved(...)) / .all() / .get(name) / .delete(name)
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from core.errors import UsageError

from . import timeline
from .filters import Filters

SAVED_FILE = "saved-searches.json"
IMAGES_FOLDER = "saved-images"
MAX_SAVED = 500
MAX_NAME = 100
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Saved:
    name: str
    query: str = ""
    image: str | None = None  # the query image's file name in IMAGES_FOLDER
    liked: tuple = ()
    disliked: tuple = ()
    folder: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    has_caption: bool | None = None
    sort: str = "relevance"
    saved_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def filters(self) -> Filters:
        return Filters(self.folder, self.date_from, self.date_to, self.has_caption)

    def as_json(self) -> dict:
        return {**asdict(self), "liked": list(self.liked), "disliked": list(self.disliked)}


def check_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UsageError("give the saved search a name")
    name = name.strip()
    if len(name) > MAX_NAME or _BAD_NAME.search(name):
        raise UsageError(f"a saved search's name is at most {MAX_NAME} characters, without control characters")
    return name


class SavedSearches:
    def __init__(self, store):
        self.store = store

    @property
    def folder(self) -> Path:
        if self.store.remote:
            raise UsageError("saved searches are kept in a local index folder; this index is in object storage")
        return Path(self.store.path)

    def all(self) -> list[Saved]:
        """Every saved search, by name."""
        return sorted(self._read().values(), key=lambda s: s.name.casefold())

    def get(self, name: str) -> Saved:
        found = self._read().get(check_name(name))
        if found is None:
            raise UsageError(f"no saved search is called {name!r} (glance saved lists them)")
        return found

    def save(self, saved: Saved, image: bytes | None = None) -> Saved:
        """Keep `saved` (replacing one of the same name); `image`: the query image's bytes."""
        saved = _checked(saved)
        if image is not None:
            saved = Saved(**{**saved.__dict__, "image": self._keep_image(image)})
        with self._locked():
            known = self._read()
            if saved.name not in known and len(known) >= MAX_SAVED:
                raise UsageError(f"at most {MAX_SAVED} saved searches; delete some first")
            known[saved.name] = saved
            self._write(known)
        return saved

    def delete(self, name: str) -> None:
        name = check_name(name)
        with self._locked():
            known = self._read()
            if known.pop(name, None) is None:
                raise UsageError(f"no saved search is called {name!r} (glance saved lists them)")
            self._write(known)

    def image_bytes(self, saved: Saved) -> bytes | None:
        if not saved.image:
            return None
        try:
            return (self.folder / IMAGES_FOLDER / Path(saved.image).name).read_bytes()
        except OSError:
            raise UsageError(f"the query image of the saved search {saved.name!r} is gone from the index "
                             "folder; save it again") from None

    # ----- the file

    def _read(self) -> dict[str, Saved]:
        try:
            data = json.loads((self.folder / SAVED_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            raise UsageError(f"{self.folder / SAVED_FILE} is damaged: move it away to start afresh") from None
        known = {}
        names = {f.name for f in fields(Saved)}
        for entry in data.get("searches", []) if isinstance(data, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                values = {k: v for k, v in entry.items() if k in names}
                values["liked"], values["disliked"] = tuple(values.get("liked", ())), tuple(values.get("disliked", ()))
                known[entry["name"]] = Saved(**values)
        return known

    def _write(self, known: dict[str, Saved]) -> None:
        body = json.dumps({"version": 1, "searches": [s.as_json() for s in known.values()]}, ensure_ascii=False,
                          indent=1)
        fd, partial = tempfile.mkstemp(dir=self.folder, prefix=".saved-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
            os.replace(partial, self.folder / SAVED_FILE)  # readers see the old list or the whole new one
        except OSError as exc:
            Path(partial).unlink(missing_ok=True)
            raise UsageError(f"cannot save into {self.folder}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _locked(self):
        if not self.folder.is_dir():
            raise UsageError(f"no index at {self.folder}: build one with glance index first")
        with open(self.folder / f".{SAVED_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _keep_image(self, image: bytes) -> str:
        name = hashlib.sha256(image).hexdigest()
        folder = self.folder / IMAGES_FOLDER
        folder.mkdir(exist_ok=True)
        if not (folder / name).exists():
            fd, partial = tempfile.mkstemp(dir=folder, prefix=".image-")
            with os.fdopen(fd, "wb") as out:
                out.write(image)
            os.replace(partial, folder / name)
        return name


def _checked(saved: Saved) -> Saved:
    name = check_name(saved.name)
    timeline.check_sort(saved.sort)
    if not isinstance(saved.query, str):
        raise UsageError("the query must be text")
    for photos, what in ((saved.liked, "liked"), (saved.disliked, "disliked")):
        if not all(isinstance(p, str) for p in photos):
            raise UsageError(f"the {what} photos must be photo ids")
    return Saved(**{**saved.__dict__, "name": name, "liked": tuple(saved.liked), "disliked": tuple(saved.disliked)})

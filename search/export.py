"""Results taken elsewhere: a folder of symlinks to the photos of a result list (`glance search --export-links DIR`).

The links point at the originals, so nothing is copied and the library is never written to: a folder inside an
indexed root is refused, and so is a name that is already taken in the folder (nothing is overwritten). Links
are numbered in the list's order (`0001-name.jpg`), so a file manager shows them as ranked or dated.
"""
from __future__ import annotations

import os
from pathlib import Path

from core import location
from core.errors import UsageError


def link_folder(hits: list[dict], folder: str | Path, roots: list[str]) -> int:
    """Symlink each hit's file (hit_json dicts, in order) into `folder`, made if missing; the number made."""
    target = Path(folder).expanduser().absolute()
    _check_outside_library(target, roots)
    if any(location.is_uri(hit["file"]) for hit in hits):
        raise UsageError("photos in object storage cannot be linked to; use --json for their URIs")
    names = [f"{number:04d}-{Path(hit['file']).name}" for number, hit in enumerate(hits, 1)]
    taken = [name for name in names if (target / name).exists() or (target / name).is_symlink()]
    if taken:
        raise UsageError(f"{target / taken[0]} already exists: export into an empty or new folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, hit in zip(names, hits):
            os.symlink(hit["file"], target / name)
    except OSError as exc:
        raise UsageError(f"cannot write the links into {target}: {exc.strerror or exc}") from None
    return len(names)


def _check_outside_library(target: Path, roots: list[str]) -> None:
    resolved = target.resolve()
    for root in roots:
        if location.is_uri(root):
            continue
        if resolved == Path(root).resolve() or resolved.is_relative_to(Path(root).resolve()):
            raise UsageError(f"{target} is inside the indexed folder {root}: Glance never writes into the "
                             f"photo library; export somewhere else")

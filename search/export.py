"""Results taken elsewhere: a result list as CSV or JSON (`glance search --export FILE`, the page's export, the
/export endpoint), or a folder of symlinks to its photos (`glance search --export-links DIR`).

A table holds one row per photo, in the list's order: path, score, taken-at date (ISO 8601, empty where
unknown) and its captions (CSV: joined by " | "; JSON: a list). Neither is ever written into the photo library.

The links point at the originals, so nothing is copied and the library is never written to: a folder inside an
indexed root is refused, and so is a name that is already taken in the folder (nothing is overwritten). Links
are numbered in the list's order (`0001-name.jpg`), so a file manager shows them as ranked or dated.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from core import location
from core.errors import UsageError


EXPORT_FORMATS = ("csv", "json")
EXPORT_COLUMNS = ("path", "score", "taken_at", "captions")


def export_rows(hits: list[dict], captions: dict[str, list[str]]) -> list[dict]:
    """Table rows for hit_json dicts, with each photo's captions (`captions`: id -> texts)."""
    return [{"path": hit["file"], "score": hit["score"], "taken_at": hit["taken_at"] or "",
             "captions": captions.get(hit["id"], [])} for hit in hits]


def export_text(rows: list[dict], fmt: str) -> str:
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"the export format must be one of: {', '.join(EXPORT_FORMATS)}")
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "captions": " | ".join(row["captions"])})
    return out.getvalue()


def format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in EXPORT_FORMATS:
        raise UsageError(f"--export FILE must end in .csv or .json, not {Path(path).name}")
    return suffix


def write_export(path: str | Path, text: str, roots: list[str]) -> Path:
    """Write an export file (replacing an older export there), never inside an indexed root."""
    target = Path(path).expanduser().absolute()
    _check_outside_library(target, roots)
    if target.is_dir():
        raise UsageError(f"{target} is a folder: give a file name ending in .csv or .json")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


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

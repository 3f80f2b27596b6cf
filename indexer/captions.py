"""Captions that live outside the image: sidecar text files and --captions files (CSV, JSON Lines, plain text).

Captions inside the image (EXIF ImageDescription, XMP dc:description) are read by decode.py.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from core import location
from core.errors import UsageError

from .decode import clean_caption

SIDECAR_MAX_BYTES = 64 << 10  # a caption, not a novel: larger sidecars are cut here
PATH_COLUMNS = ("path", "file", "filename", "image")
TEXT_COLUMNS = ("caption", "text", "description")


@dataclass(frozen=True)
class Entry:
    """One caption from a captions file; path None for a free-standing text (a label vocabulary)."""
    path: str | None
    text: str
    file: str  # the captions file it came from
    line: int

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


def read_sidecar(path: str, storage_options: dict | None = None) -> str | None:
    """The whole sidecar is one caption (UTF-8, BOM and surrounding whitespace removed). `path` may be an
    object-storage URI (credentials as for indexer.decode.read_file); any failure is an OSError."""
    if location.is_uri(path):
        try:
            data = location.read_bytes(path, storage_options, limit=SIDECAR_MAX_BYTES)
        except location.StorageError as exc:
            raise OSError(str(exc)) from None
        return clean_caption(data.decode("utf-8-sig", "replace"))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        data = f.read(SIDECAR_MAX_BYTES)
    return clean_caption(data.decode("utf-8-sig", "replace"))


def load_caption_files(paths: list[str]) -> list[Entry]:
    """Parse every --captions file before any work starts, so a typo fails in a second, not after hours."""
    entries = []
    for path in paths:
        file = Path(path).expanduser()
        if not file.is_file():
            raise UsageError(f"no such captions file: {path}")
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read captions file {path}: {exc}") from None
        parse = {".csv": _parse_csv, ".jsonl": _parse_jsonl, ".ndjson": _parse_jsonl, ".txt": _parse_txt}.get(
            file.suffix.lower())
        if parse is None:
            raise UsageError(f"captions file {path}: use .csv, .jsonl or .txt (one free-standing text per line)")
        entries.extend(parse(text, str(file)))
    return entries


def _parse_csv(text: str, name: str) -> list[Entry]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = {f.strip().lower(): f for f in reader.fieldnames or []}
    path_col = next((fields[c] for c in PATH_COLUMNS if c in fields), None)
    text_col = next((fields[c] for c in TEXT_COLUMNS if c in fields), None)
    if text_col is None:
        raise UsageError(f"captions file {name}: the first row must name the columns, e.g. path,caption "
                         f"(found: {', '.join(reader.fieldnames or []) or 'nothing'})")
    entries = []
    for row in reader:
        caption = clean_caption(row.get(text_col))
        if caption:
            path = (row.get(path_col) or "").strip() if path_col else ""
            entries.append(Entry(path or None, caption, name, reader.line_num))
    return entries


def _parse_jsonl(text: str, name: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"captions file {name} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UsageError(f"captions file {name} line {number}: expected an object like "
                             '{"path": "a.jpg", "caption": "..."}')
        path = next((record[k] for k in PATH_COLUMNS if record.get(k)), None)
        texts = record.get("captions")
        if texts is None:
            texts = [next((record[k] for k in TEXT_COLUMNS if k in record), None)]
        if not isinstance(texts, list) or not all(isinstance(t, (str, type(None))) for t in texts) \
                or not isinstance(path, (str, type(None))):
            raise UsageError(f"captions file {name} line {number}: path must be a string and the caption a "
                             'string ("caption") or a list of strings ("captions")')
        entries.extend(Entry(path, caption, name, number) for caption in map(clean_caption, texts) if caption)
    return entries


def _parse_txt(text: str, name: str) -> list[Entry]:
    return [Entry(None, caption, name, number)
            for number, line in enumerate(text.splitlines(), 1) if (caption := clean_caption(line))]


def candidate_paths(entry_path: str, caption_file: str, roots: list[str]) -> list[str]:
    """Where a captions-file path may point: absolute as is; relative to the captions file, then to each root.
    A URI (an object in a bucket root) is its own one candidate; below a bucket root a relative path is joined
    as a key."""
    if location.is_uri(entry_path):
        return [location.normalize(entry_path)]
    path = os.path.expanduser(entry_path)
    if os.path.isabs(path):
        return [os.path.normpath(path)]
    bases = [os.path.dirname(os.path.abspath(caption_file)), *roots]
    found = [_key_below(base, path) if location.is_uri(base) else os.path.normpath(os.path.join(base, path))
             for base in bases]
    return [candidate for candidate in found if candidate]


def _key_below(root: str, relpath: str) -> str | None:
    """root/relpath as a normalized URI; None where relpath climbs out with `..` (no such object)."""
    try:
        return location.normalize(location.join(root, relpath))
    except UsageError:
        return None

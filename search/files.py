"""Access to indexed photos: their rows, details and thumbnails, and their original files, strictly inside an
indexed root after resolving symlinks (the only way a caller may reach an original). A photo in an
object-storage root has no original to serve: its thumbnail (in the index) is all a page gets, so a bucket of
originals is never fetched for a visitor."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from core import location
from store import Store, display_name, image_id, os_relpath

from .results import NotServable, PhotoDetails

DETAIL_COLUMNS = ["id", "root", "relpath", "relpath_bytes", "size", "mtime_ns", "sha256", "width", "height",
                  "taken_at", "camera", "has_caption", "indexed_at"]
MAX_ID_CHARS = 128


def display_path(root: str, relpath: str) -> str:
    """root/relpath for people (relpath is the index's display form: odd bytes as \\xNN)."""
    return os.path.join(root, *relpath.split("/"))


def photo_row(store: Store, photo_id: str, columns: list[str]) -> dict:
    if not isinstance(photo_id, str) or not photo_id or "\x00" in photo_id or len(photo_id) > MAX_ID_CHARS:
        raise NotServable(f"no photo with id {str(photo_id)[:80]!r} in the index", 404)
    row = store.photo_row(photo_id, columns)
    if row is None:
        raise NotServable(f"no photo with id {photo_id!r} in the index", 404)
    return row


def looks_like_path(photo: str | Path) -> bool:
    return isinstance(photo, Path) or "/" in str(photo) or os.sep in str(photo)


def photo_id_for(store: Store, photo: str | Path) -> str:
    """An indexed photo's id, from its id or from its path (absolute, or relative to the working directory)."""
    if location.is_uri(str(photo)):
        return row_for_uri(store, str(photo))["id"]
    if looks_like_path(photo):
        return row_for_path(store, Path(photo))["id"]
    return photo_row(store, str(photo), ["id"])["id"]


def row_for_path(store: Store, path: Path) -> dict:
    """The indexed photo at `path`, as written or through symlinks; else NotServable. Looked up by id, which
    hashes the name's bytes, so a name that is not UTF-8 is found like any other."""
    absolute = Path(os.path.abspath(path.expanduser()))
    for candidate in dict.fromkeys([absolute, _resolved(absolute)]):
        for root in store.photo_roots():
            if candidate.is_relative_to(root) and candidate != Path(root):
                relpath = candidate.relative_to(root).as_posix()
                row = store.photo_row(image_id(root, relpath), ["id", "root", "relpath", "relpath_bytes"])
                if row is not None:
                    return row
    raise NotServable(f"{path} is not an indexed photo", 404)


def row_for_uri(store: Store, uri: str) -> dict:
    """The indexed photo at an object-storage URI (names compare as they are: a bucket has no links)."""
    target = location.normalize(uri)
    for root in store.photo_roots():
        if target.startswith(root + "/"):
            row = store.photo_row(image_id(root, target[len(root) + 1:]), ["id", "root", "relpath", "relpath_bytes"])
            if row is not None:
                return row
    raise NotServable(f"{location.display(uri)} is not an indexed photo", 404)


def details(store: Store, photo_id: str) -> PhotoDetails:
    row = photo_row(store, photo_id, DETAIL_COLUMNS)
    mtime = datetime.fromtimestamp(row["mtime_ns"] / 1e9) if row.get("mtime_ns") is not None else None
    return PhotoDetails(row["id"], row["root"], row["relpath"], display_path(row["root"], row["relpath"]),
                        row["size"], mtime, row["sha256"], row["width"], row["height"], row["taken_at"],
                        row["camera"], bool(row["has_caption"]), row["indexed_at"], store.captions_of(row["id"]))


EXIF_SHOWN = {  # EXIF tag -> label, in the order the large view lists them (0x8769 is the Exif sub-IFD)
    0x010F: "Make", 0x0110: "Model", 0xA434: "Lens", 0x829D: "Aperture (f/)", 0x829A: "Exposure (s)",
    0x8827: "ISO", 0x920A: "Focal length (mm)", 0xA405: "Focal length, 35 mm", 0x9209: "Flash",
    0x9003: "Taken", 0x0131: "Software",
}


def exif_details(store: Store, photo_id: str) -> list[tuple[str, str]]:
    """(label, value) for the EXIF fields of EXIF_SHOWN that the original holds: its header only, through the
    allow-listed decoders (no pixels are decoded); [] for a file that is gone, unreadable or in object storage."""
    from PIL import Image

    from core.images import readable_formats

    try:
        path = original(store, photo_id)
        with Image.open(path, formats=readable_formats()) as image:
            exif = image.getexif()
            found = {**dict(exif), **dict(exif.get_ifd(0x8769))}
    except (NotServable, OSError, ValueError, SyntaxError):
        return []
    return [(label, _exif_text(found[tag])) for tag, label in EXIF_SHOWN.items() if tag in found
            and _exif_text(found[tag])]


def _exif_text(value) -> str:
    if isinstance(value, bytes):
        return ""
    if isinstance(value, float) or type(value).__name__ == "IFDRational":
        number = float(value)
        return f"1/{round(1 / number)}" if 0 < number < 0.5 else f"{number:g}"
    return str(value).strip("\x00 ")[:100]


def thumbnail(store: Store, photo_id: str) -> bytes:
    row = photo_row(store, photo_id, ["thumb"])
    if not row["thumb"]:
        raise NotServable(f"photo {photo_id} has no thumbnail", 404)
    return row["thumb"]


def original(store: Store, photo: str | Path) -> Path:
    """The original file of an indexed photo, by id or by path, strictly inside an indexed root.

    Symlinks are resolved first, so a link (or `..`) that leads out of the root is refused (403);
    an unknown id, a path that is not an indexed photo, or a missing file is a 404. Both raise NotServable.
    """
    columns = ["root", "relpath", "relpath_bytes"]
    if location.is_uri(str(photo)):
        row = row_for_uri(store, str(photo))
    else:
        row = row_for_path(store, Path(photo)) if looks_like_path(photo) else photo_row(store, str(photo), columns)
    return original_of_row(store, row)


def original_of_row(store: Store, row: dict) -> Path:
    """`original` for a row already read (root, relpath, relpath_bytes: as store.photo_paths gives them), so a
    caller reaching many photos reads their paths in one query."""
    return _inside_root(store, row["root"], os_relpath(row["relpath"], row.get("relpath_bytes")))


def _inside_root(store: Store, root: str, relpath: str) -> Path:
    shown = display_path(root, display_name(relpath))
    if root not in store.photo_roots():
        raise NotServable(f"{root} is not an indexed folder", 403)
    if location.is_uri(root):
        raise NotServable(f"{shown} is in object storage: only its thumbnail is served, never the original", 403)
    try:
        real_root = Path(root).resolve(strict=True)
        target = (real_root / relpath).resolve(strict=True)
    except (OSError, RuntimeError):  # missing file, symlink loop
        raise NotServable(f"{shown} no longer exists", 404) from None
    if not target.is_relative_to(real_root) or target == real_root:
        raise NotServable(f"{shown} leads outside its indexed folder", 403)
    if not target.is_file():
        raise NotServable(f"{shown} is not a file", 404)
    return target


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path

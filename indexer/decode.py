"""Reading one photo: bytes and content hash, then pixels, metadata and a thumbnail.

Everything here runs in decoding worker threads (hashing and Pillow's decoders release the GIL), and every
failure becomes `BadFile` with a reason a person can act on. Files are opened read-only, never written.

A path may also be an object-storage URI (`s3://bucket/key`, what Todo.path gives for a bucket root). Its
credentials come from the environment plus the optional `storage_options` dict (LanceDB's keys; picklable, for
code in other processes such as Ray tasks) or core.location.configure(); see core/location.py. An object is read
whole in one GET, so it is hashed and decoded from the same bytes whatever its size.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

from PIL import Image

from core import location
from core.images import LIBRARY_MAX_MEGAPIXELS, ImageRefused, describe_error, open_for_model, thumbnail, upright
from models.preprocess import Preprocess, to_rgb
from store import display_name as display_path  # noqa: F401 - one rule for showing odd names

# Files up to this size are read into memory once (hash and decode from the same bytes); larger ones are
# hashed as a stream and decoded from disk.
READ_WHOLE_MAX = 64 << 20
DEFAULT_MAX_MEGAPIXELS = LIBRARY_MAX_MEGAPIXELS

DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# Texts cameras write into ImageDescription when the user wrote nothing: not captions.
PLACEHOLDER_DESCRIPTION = re.compile(
    r"^\s*(?:[\w ]*digital (?:still )?camera|sony dsc|dcim|exif_jpeg_picture|default|image|untitled|"
    r"<[^>]*>)?\s*$", re.IGNORECASE)


class BadFile(Exception):
    """This file cannot be indexed; str(exc) says why."""


@dataclass
class FileBytes:
    size: int
    mtime_ns: int
    sha256: str
    data: bytearray | None  # None: too big to keep in memory, decode from the path


@dataclass
class Decoded:
    pixels: Image.Image  # RGB at the model's input size, ready for Preprocess.to_tensor
    thumb: bytes  # JPEG, longest side THUMB_SIZE (core/images.py thumbnail)
    width: int  # upright, in the original's pixels
    height: int
    taken_at: datetime | None
    camera: str | None
    descriptions: list[tuple[str, str]] = field(default_factory=list)  # (source, text) from EXIF / XMP
    decoded_size: tuple[int, int] = (0, 0)  # what was actually decoded (smaller than the file for draft JPEGs)


def read_file(path: str, storage_options: dict | None = None) -> FileBytes:
    """Open read-only (never following into a FIFO or device), hash the content, keep it if small enough."""
    if location.is_uri(path):
        return _read_object(path, storage_options)
    fd = _open_read_only(path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadFile(f"not a regular file ({file_kind(info.st_mode)})")
        if info.st_size == 0:
            raise BadFile("empty file (0 bytes)")
        digest = hashlib.sha256()
        keep = info.st_size <= READ_WHOLE_MAX
        data = _read_all(fd, info.st_size, digest) if keep else _hash_stream(fd, digest)
    except OSError as exc:
        raise BadFile(f"read error: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return FileBytes(info.st_size, info.st_mtime_ns, digest.hexdigest(), data)


def _read_object(uri: str, storage_options: dict | None) -> FileBytes:
    """An object's bytes, hash, size and last-modified time (the listing's mtime: the next run compares them)."""
    try:
        found = location.stat(uri, storage_options)
        if found is None:
            raise BadFile("file disappeared while indexing")
        size, mtime_ns = found
        if size == 0:
            raise BadFile("empty file (0 bytes)")
        if size > location.READ_MAX:
            raise BadFile(f"too large to read from object storage ({size / 1e9:.1f} GB)")
        data = bytearray(location.read_bytes(uri, storage_options))
    except FileNotFoundError:
        raise BadFile("file disappeared while indexing") from None
    except location.StorageError as exc:
        raise BadFile(f"read error: {exc}") from None
    return FileBytes(size, mtime_ns, hashlib.sha256(data).hexdigest(), data)


def _open_read_only(path: str) -> int:
    # O_NONBLOCK: opening a FIFO named like a photo must not hang the run. O_NOATIME: reading a library
    # should not even touch access times (allowed for the file's owner; retried without it otherwise).
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    for extra in (getattr(os, "O_NOATIME", 0), 0):
        try:
            return os.open(path, flags | extra)
        except PermissionError:
            if not extra:
                raise BadFile("permission denied") from None
        except FileNotFoundError:
            raise BadFile("file disappeared while indexing") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadFile("symlink loop") from None
            raise BadFile(f"cannot open: {exc.strerror or exc}") from None
    raise AssertionError("unreachable")


def _read_all(fd: int, size: int, digest) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:  # the file shrank since fstat: hash what is there; the next run sees the new mtime
            break
        got += n
    view.release()
    if got < size:
        del buffer[got:]
    digest.update(buffer)
    return buffer


def _hash_stream(fd: int, digest) -> None:
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    return None


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a file"


def decode(path: str, content: bytes | None, preprocess: Preprocess, max_pixels: int,
           storage_options: dict | None = None) -> Decoded:
    """Pixels for the model, a thumbnail and metadata; any decoder failure becomes BadFile. Without `content`, a
    URI is read first (a local file is decoded from disk)."""
    if content is None and location.is_uri(path):
        content = read_file(path, storage_options).data
    try:
        image = open_for_model(content if content is not None else path, preprocess.input_size,
                               max_pixels=max_pixels, limit_hint="--max-megapixels")
    except ImageRefused as exc:
        raise BadFile(exc.reason) from None
    try:
        with image:
            return _finish(image, preprocess, *image.original_size)
    except MemoryError:
        raise BadFile("not enough memory to decode") from None
    except Exception as exc:  # noqa: BLE001 - a hostile or broken file must never stop the run
        raise BadFile(f"corrupt or truncated image ({describe_error(exc)})") from None


def _finish(image: Image.Image, preprocess: Preprocess, width: int, height: int) -> Decoded:
    decoded_size = image.size  # the pixels are loaded: some formats (PNG) keep EXIF after the pixel data
    exif = image.getexif()
    if exif.get(0x0112) in (5, 6, 7, 8):  # orientation with a quarter turn: upright size is swapped
        width, height = height, width
    # The model's preprocessing applies EXIF orientation and makes RGB itself (open_clip's keeps alpha until
    # after the resize), exactly as for a query image.
    thumb_source = _flatten_alpha(image) if _has_alpha(image) else to_rgb(image)
    return Decoded(
        pixels=preprocess.resize(image), thumb=thumbnail(thumb_source), width=width, height=height,
        taken_at=_taken_at(exif), camera=_camera(exif), descriptions=descriptions(image, exif),
        decoded_size=decoded_size)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Transparent areas on white for the thumbnail, as viewers show them (the model sees plain RGB)."""
    turned = upright(image).convert("RGBA")
    canvas = Image.new("RGBA", turned.size, (255, 255, 255, 255))
    canvas.alpha_composite(turned)
    return canvas.convert("RGB")


def _taken_at(exif: Image.Exif) -> datetime | None:
    value = exif.get_ifd(0x8769).get(36867) or exif.get(36867)  # DateTimeOriginal
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:  # "0000:00:00 00:00:00" and other junk cameras write
        return None


def _camera(exif: Image.Exif) -> str | None:
    make, model = _text(exif.get(271)), _text(exif.get(272))
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model  # "Canon" + "Canon EOS 5D" -> "Canon EOS 5D"
    return " ".join(part for part in (make, model) if part) or None


def descriptions(image: Image.Image, exif: Image.Exif) -> list[tuple[str, str]]:
    """Captions stored inside the file: EXIF ImageDescription and XMP dc:description (deduplicated)."""
    found = []
    exif_text = clean_caption(_text(exif.get(270)))
    if exif_text and not PLACEHOLDER_DESCRIPTION.match(exif_text):
        found.append(("exif", exif_text))
    xmp_text = clean_caption(xmp_description(raw_xmp(image)))
    if xmp_text and not PLACEHOLDER_DESCRIPTION.match(xmp_text) and xmp_text != exif_text:
        found.append(("xmp", xmp_text))
    return found


def clean_caption(text: str | None) -> str | None:
    if not text:
        return None
    text = text.replace("\x00", "").strip()
    return text or None


def raw_xmp(image: Image.Image) -> bytes | str | None:
    for key in ("xmp", "XML:com.adobe.xmp"):
        if image.info.get(key):
            return image.info[key]
    tags = getattr(image, "tag_v2", None)  # TIFF keeps XMP in tag 700
    return tags.get(700) if tags is not None else None


def xmp_description(packet: bytes | str | None) -> str | None:
    """dc:description from an XMP packet: the x-default alternative, else the first one."""
    if not packet:
        return None
    if isinstance(packet, str):
        packet = packet.encode("utf-8", "replace")
    packet = packet.strip(b"\x00 \r\n\t")
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:  # XMP never needs these; refuse entity tricks
        return None
    try:
        root = ET.fromstring(packet)
    except ET.ParseError:
        return None
    for element in root.iter():
        if DC + "description" in element.attrib:
            return element.attrib[DC + "description"]
        if element.tag != DC + "description":
            continue
        items = list(element.iter(RDF + "li"))
        preferred = [li for li in items if li.get(XML_LANG) == "x-default"] or items
        texts = [li.text for li in preferred if li.text and li.text.strip()]
        if texts:
            return texts[0]
        if element.text and element.text.strip():
            return element.text
    return None


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text or None

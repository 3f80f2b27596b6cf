"""The one way Glance opens an image file: the indexer, query uploads, the large view and `glance embed`.

Only the decoders in FORMATS may run. Pillow would otherwise pick a plugin by content, whatever the file is
called, and its EPS plugin hands the file to Ghostscript; so PostScript, EPS, PDF and SVG (and anything else
that would need an external program or an exotic decoder) are refused with one clear line. The pixel count is
checked from the header, before any pixel is decoded, so a decompression bomb costs nothing. Limits belong to
the caller: query uploads are small, library photos may be very large (and are decoded in draft mode).
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UsageError

# Camera MPO files open through the JPEG plugin. HEIF and AVIF need optional libraries (pillow-heif, libavif).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF", "AVIF")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF, AVIF"
# Leading bytes of formats that need an external program (Ghostscript, a PDF or SVG renderer): named in the
# refusal, so a user knows why a file that "is an image" to them was not opened.
EXTERNAL_KINDS = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "PostScript/EPS"), (b"%PDF", "PDF"),
                  (b"<svg", "SVG"), (b"<?xml", "SVG/XML"))
SNIFF_BYTES = 64
# Library photos: today's largest phone sensors are 200 MP. (Query uploads have their own, smaller limit.)
LIBRARY_MAX_MEGAPIXELS = 200
THUMBNAIL_MAX_PIXELS = 4_000_000  # the index stores ~256 px thumbnails; anything far bigger is not one of ours
# JPEGs decode at 1/2, 1/4 or 1/8 scale almost for free (DCT scaling). Ask for at least 1.4x the model's input
# on each side, so the final resize still averages several source pixels per output pixel: on 12-MP photos
# (1/8 scale: 500x375) the model input then differs from a full decode by 0.3 grey levels on average at 224 px
# and 0.5 at 256 px, and decode + resize takes 25 ms instead of 120 ms. (At 1.5x a 256 px model got 1/4 scale:
# 0.23 grey levels closer, for 12 ms more per photo: 30% of its decoding cost.)
DRAFT_FACTOR = 1.4
# Decodes bigger than this (after draft scaling) take turns, so N threads never hold N huge images at once.
BIG_DECODE_PIXELS = 40_000_000
_big_decode = threading.Lock()

# Every caller passes its own pixel limit, checked from the header; Pillow's global one would be stricter
# than a library's (it raises at 2x its 89 MP) and looser than an upload's.
Image.MAX_IMAGE_PIXELS = None
_heif_lock = threading.Lock()
_heif_registered = False


class ImageRefused(UsageError):
    """An image that is not opened; `reason` says why (without the file's name)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}" if name else reason)
        self.name, self.reason = name, reason


Source = bytes | bytearray | memoryview | str | Path | BinaryIO


def open_image(source: Source, *, max_pixels: int, name: str = "the image", limit_hint: str = "",
               max_bytes: int | None = None, draft: int | None = None) -> Image.Image:
    """The decoded image (orientation as stored; see `upright`), or ImageRefused with a one-line reason.
    `image.original_size` is the size in the file (draft decoding makes `image.size` smaller).

    source:     the file's bytes, a path, or a binary file object.
    max_pixels: refused above this many pixels, read from the header (`limit_hint` explains the limit).
    max_bytes:  refused above this many bytes, before anything is read.
    draft:      JPEGs decode by DCT scaling to at least this many pixels on each side (much less memory).
    """
    register_heif()
    stream = _stream(source, name, max_bytes)
    refused = external_kind(_peek(stream, name))
    if refused:
        raise ImageRefused(name, f"{refused} files are never opened (reading them would run an external program); "
                                 f"Glance reads {FORMAT_NAMES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "corrupt EXIF" and friends: the pixels still decode
            image = Image.open(stream, formats=readable_formats())
            check_pixels(image, name, max_pixels, limit_hint)
            image.original_size = image.size
            if draft and image.format in ("JPEG", "MPO"):
                image.draft("RGB", (draft, draft))
            if image.size[0] * image.size[1] > BIG_DECODE_PIXELS:
                with _big_decode:
                    image.load()
            else:
                image.load()
    except ImageRefused:
        raise
    except UnidentifiedImageError:
        raise ImageRefused(name, f"not an image Glance can read (it reads {FORMAT_NAMES})") from None
    except MemoryError:
        raise ImageRefused(name, "not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - a hostile or broken file is refused, never a traceback
        raise ImageRefused(name, f"damaged or truncated ({describe_error(exc)})") from None
    return image


def open_for_model(source: Source, input_size: tuple[int, int], *, max_pixels: int, name: str = "",
                   limit_hint: str = "") -> Image.Image:
    """A library photo opened for a model whose input is `input_size` (height, width), drafted as DRAFT_FACTOR
    says. The indexer and `glance eval --model` both open photos here, so a model sees the same pixels in both."""
    return open_image(source, name=name, max_pixels=max_pixels, limit_hint=limit_hint,
                      draft=int(DRAFT_FACTOR * max(input_size)))


def check_pixels(image: Image.Image, name: str, max_pixels: int, limit_hint: str = "") -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRefused(name, "has no pixels")
    if width * height > max_pixels:
        hint = f" ({limit_hint})" if limit_hint else ""
        raise ImageRefused(name, f"too many pixels: {width}x{height} = {width * height / 1e6:.0f} MP, over the "
                                 f"limit of {max_pixels / 1e6:g} MP{hint}")


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (a damaged orientation tag leaves it as stored)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF must not cost the photo
        return image


def external_kind(head: bytes) -> str | None:
    """The kind of file that would need an external program to open, from its first bytes; else None."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for magic, kind in EXTERNAL_KINDS:
        if stripped[:len(magic)].lower() == magic.lower():
            return kind
    return None


def readable_formats() -> list[str]:
    """FORMATS that this Pillow build can open (AVIF and HEIF depend on optional libraries)."""
    Image.init()
    return [name for name in FORMATS if name in Image.OPEN]


def register_heif() -> None:
    """iPhone photos are HEIC; Pillow reads them only through pillow-heif, registered once per process."""
    global _heif_registered
    with _heif_lock:
        if _heif_registered:
            return
        _heif_registered = True
        try:
            from pillow_heif import register_heif_opener
        except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
            return
        register_heif_opener()


def _stream(source: Source, name: str, max_bytes: int | None):
    if isinstance(source, (bytes, bytearray, memoryview)):
        _check_size(len(source), name, max_bytes)
        return io.BytesIO(source)
    if isinstance(source, (str, Path)):
        try:
            size = os.stat(source).st_size
        except OSError as exc:
            raise ImageRefused(name, f"cannot read it ({exc.strerror or exc})") from None
        _check_size(size, name, max_bytes)
        return str(source)  # Pillow opens it and closes it once the pixels are loaded
    return source


def _check_size(size: int, name: str, max_bytes: int | None) -> None:
    if size == 0:
        raise ImageRefused(name, "empty file (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise ImageRefused(name, f"{size / 2**20:.1f} MiB, over the limit of {max_bytes // 2**20} MiB")


def _peek(stream, name: str) -> bytes:
    try:
        if isinstance(stream, str):
            with open(stream, "rb") as handle:
                return handle.read(SNIFF_BYTES)
        position = stream.tell()
        head = stream.read(SNIFF_BYTES)
        stream.seek(position)
        return head
    except OSError as exc:
        raise ImageRefused(name, f"cannot read it ({exc.strerror or exc})") from None


def describe_error(exc: Exception) -> str:
    """An exception as `Type: first line`, at most 200 characters: what a one-line refusal quotes."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}"[:200] if message else type(exc).__name__


THUMB_SIZE = 256  # longest side, px
THUMB_QUALITY = 80


def thumbnail(image: Image.Image) -> bytes:
    """The JPEG thumbnail the index stores for a photo (and the near-duplicate layouts are read from)."""
    small = image.copy()
    small.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=THUMB_QUALITY)
    return out.getvalue()

"""Query images from users: the one place that decides what is accepted (size, pixels, kind of input).

Accepted: a path to a local file, the file's bytes, or an already decoded PIL image. Never a URL: the
server must not fetch anything on a user's behalf. A file is checked for its byte size before it is
read, and for its pixel count from the header before it is decoded, so a decompression bomb costs nothing.
"""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import UsageError

MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # generous for a phone JPEG/HEIC or a PNG screenshot
MAX_PIXELS = 50_000_000  # 50 MP: bigger than most cameras; a bomb of 100k x 100k is refused from its header
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(//|[^\\/])")  # http://, file://, data:..., but not C:\ or C:/



def _register_heif() -> None:
    """iPhone photos are HEIC; Pillow reads them only through the optional pillow-heif plugin."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


_register_heif()


def open_query_image(source) -> Image.Image:
    """A decoded, size-checked PIL image, or UsageError with a one-line reason."""
    if isinstance(source, Image.Image):
        return _checked_pixels(source, "the image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), "the uploaded image")
        return _decode(io.BytesIO(data), "the uploaded image")
    if isinstance(source, (str, Path)):
        return _open_path(source)
    raise UsageError(f"a query image must be a file path, bytes or a PIL image, not {type(source).__name__}")


def _open_path(source) -> Image.Image:
    text = str(source)
    if isinstance(source, str) and _URL.match(text) and not Path(text).exists():
        raise UsageError("URLs are not accepted as query images (nothing is fetched); download the image and give the file")
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(f"no such image file: {text}")
    _check_bytes(path.stat().st_size, str(path))
    with path.open("rb") as handle:
        return _decode(io.BytesIO(handle.read()), str(path))


def _check_bytes(size: int, name: str) -> None:
    if size > MAX_UPLOAD_BYTES:
        raise UsageError(f"{name} is {size / 2**20:.1f} MiB; query images are limited to {MAX_UPLOAD_BYTES // 2**20} MiB")
    if size == 0:
        raise UsageError(f"{name} is empty")


def _decode(stream: io.BytesIO, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            _checked_pixels(image, name)  # from the header, before any pixel is decoded
            image.load()
    except UsageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UsageError(f"{name} is not an image Glance can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UsageError(f"{name} is damaged or truncated ({exc})") from None
    return image


def _checked_pixels(image: Image.Image, name: str) -> Image.Image:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise UsageError(f"{name} is {width}x{height} ({width * height / 1e6:.0f} MP); "
                         f"query images are limited to {MAX_PIXELS / 1e6:.0f} megapixels")
    if width < 1 or height < 1:
        raise UsageError(f"{name} has no pixels")
    return image

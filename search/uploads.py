"""Query images from users: what is accepted (size, pixels, kind of input), opened by core.images.

Accepted: a path to a local file, the file's bytes, or an already decoded PIL image. Never a URL: the
server must not fetch anything on a user's behalf.
"""
from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from core.errors import UsageError
from core.images import check_pixels, open_image

MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # generous for a phone JPEG/HEIC or a PNG screenshot
MAX_PIXELS = 50_000_000  # 50 MP: bigger than most cameras; a bomb of 100k x 100k is refused from its header
LIMIT_HINT = f"query images are limited to {MAX_PIXELS // 1_000_000} megapixels"
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(//|[^\\/])")  # http://, file://, data:..., but not C:\ or C:/


def open_query_image(source) -> Image.Image:
    """A decoded, size-checked PIL image, or UsageError with a one-line reason."""
    if isinstance(source, Image.Image):
        check_pixels(source, "the image", MAX_PIXELS, LIMIT_HINT)
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open(bytes(source), "the uploaded image")
    if isinstance(source, (str, Path)):
        text = str(source)
        if isinstance(source, str) and _URL.match(text) and not Path(text).exists():
            raise UsageError("URLs are not accepted as query images (nothing is fetched); download the image and "
                             "give the file")
        path = Path(text).expanduser()
        if not path.is_file():
            raise UsageError(f"no such image file: {text}")
        return _open(path, str(path))
    raise UsageError(f"a query image must be a file path, bytes or a PIL image, not {type(source).__name__}")


def _open(source, name: str) -> Image.Image:
    return open_image(source, name=name, max_pixels=MAX_PIXELS, limit_hint=LIMIT_HINT, max_bytes=MAX_UPLOAD_BYTES)

"""Pictures of indexed photos for a page: thumbnails as small files, and large previews of the originals.

Both come only from indexed photos: thumbnails from the index, originals through Engine.file_path (strictly
inside an indexed root). A thumbnail or an original that cannot be read costs its own picture (a placeholder,
or the thumbnail instead of the preview), never the page it is on.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from pathlib import Path

from PIL import Image

from core.errors import GlanceError, one_line
from core.images import LIBRARY_MAX_MEGAPIXELS, THUMBNAIL_MAX_PIXELS, open_image, upright

PREVIEW_PX = 1280  # longest side of the large view; originals are never sent as they are
# The originals are the user's own photos, so they get the library limit, not the 50 MP of untrusted uploads.
# JPEGs decode in draft mode, scaled down by DCT, so even the largest costs a fraction of its full size.
LIBRARY_MAX_PIXELS = LIBRARY_MAX_MEGAPIXELS * 1_000_000
LIBRARY_LIMIT_HINT = "the limit for library photos"
PLACEHOLDER_RGB = (200, 200, 200)


class Pictures:
    """Thumbnail files (named by content, so each is written and checked once) and large previews."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="glance-thumbs-"))
        self.placeholder = self.folder / "missing.png"
        Image.new("RGB", (64, 64), PLACEHOLDER_RGB).save(self.placeholder)

    def thumbnail(self, engine, photo_id: str) -> str:
        """A file holding the photo's thumbnail, or the placeholder when it has none or it does not decode."""
        try:
            data = engine.thumbnail(photo_id)
        except GlanceError:
            return str(self.placeholder)
        target = self.folder / f"{hashlib.sha1(data).hexdigest()[:24]}.jpg"
        if target.exists():
            return str(target)
        if not _decodes(data):
            return str(self.placeholder)
        partial = target.with_suffix(f".{threading.get_ident()}.part")
        partial.write_bytes(data)
        partial.replace(target)  # atomic: a concurrent request never sees half a file
        return str(target)

    def preview(self, engine, photo_id: str) -> tuple[Image.Image | str, str]:
        """The original, upright and shrunk to PREVIEW_PX; or its thumbnail file and the reason why not."""
        try:
            return preview_image(engine.file_path(photo_id)), ""
        except (GlanceError, OSError, ValueError) as exc:  # gone, moved out of reach, or an odd image mode
            return self.thumbnail(engine, photo_id), f"showing the thumbnail: {one_line(exc)}"

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def preview_image(path: Path) -> Image.Image:
    """An original photo as an RGB image whose longest side is at most PREVIEW_PX; ImageRefused if it cannot be."""
    image = open_image(path, max_pixels=LIBRARY_MAX_PIXELS, name=str(path), limit_hint=LIBRARY_LIMIT_HINT,
                       draft=PREVIEW_PX)
    image = upright(image).convert("RGB")
    image.thumbnail((PREVIEW_PX, PREVIEW_PX))
    return image


def _decodes(data: bytes) -> bool:
    """Whether a browser will be able to show these thumbnail bytes (checked the way every image is opened)."""
    try:
        open_image(data, max_pixels=THUMBNAIL_MAX_PIXELS, name="the thumbnail")
    except GlanceError:
        return False
    return True

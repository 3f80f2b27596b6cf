"""Reading single files: formats, orientation, modes, metadata, thumbnails, draft decoding, and bad files."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.images import THUMB_SIZE
from indexer.decode import BadFile, decode, descriptions, read_file, xmp_description
from models.preprocess import Preprocess
from tests.indexer_library import FIXTURE_IMAGES, bomb_png, exif_bytes, pattern, xmp_packet

REPO = Path(__file__).resolve().parent.parent
VISION = REPO / "tests" / "fixtures" / "nomic-tiny" / "vision-v1.5"
LIMIT = 200_000_000


@pytest.fixture(scope="module")
def preprocess(tiny_model_dirs) -> Preprocess:
    return Preprocess.from_folder(tiny_model_dirs[0])


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def run_decode(data: bytes, preprocess, limit=LIMIT):
    return decode("x", data, preprocess, limit)


@pytest.mark.parametrize("fmt,params", [("JPEG", {}), ("PNG", {}), ("WEBP", {"lossless": True}), ("GIF", {}),
                                        ("BMP", {}), ("TIFF", {}), ("HEIF", {}), ("AVIF", {})])
def test_every_format_decodes_to_model_pixels_and_a_thumbnail(fmt, params, preprocess):
    if fmt == "AVIF" and "AVIF" not in Image.SAVE:
        pytest.skip("this Pillow build has no AVIF")
    d = run_decode(encode(pattern(1, (300, 200)), fmt, **params), preprocess)
    assert d.pixels.mode == "RGB" and d.pixels.size == (224, 224)
    assert (d.width, d.height) == (300, 200)
    thumb = Image.open(io.BytesIO(d.thumb))
    assert thumb.format == "JPEG" and max(thumb.size) == THUMB_SIZE and thumb.size == (256, 171)


def test_exif_orientation_is_applied_before_embedding(preprocess):
    upright = pattern(2, (40, 80))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # stored 80x40; orientation 6 turns it back
    rotated = run_decode(encode(sideways, "PNG", exif=exif_bytes(orientation=6)), preprocess)
    plain = run_decode(encode(upright, "PNG"), preprocess)
    assert np.array_equal(np.asarray(rotated.pixels), np.asarray(plain.pixels))
    assert (rotated.width, rotated.height) == (40, 80)
    assert Image.open(io.BytesIO(rotated.thumb)).size[1] > Image.open(io.BytesIO(rotated.thumb)).size[0]


def test_fixture_exif_rotated_jpeg_matches_the_models_own_preprocessing(preprocess):
    path = FIXTURE_IMAGES / "exif_rotated.jpg"
    d = decode(str(path), path.read_bytes(), preprocess, LIMIT)
    reference = preprocess.resize(Image.open(path))
    assert np.array_equal(np.asarray(d.pixels), np.asarray(reference))


@pytest.mark.parametrize("name", ["cmyk.jpg", "palette.gif", "transparent.png", "gray.png"])
def test_odd_modes_from_real_files(name, preprocess):
    path = FIXTURE_IMAGES / name
    d = decode(str(path), path.read_bytes(), preprocess, LIMIT)
    assert d.pixels.mode == "RGB"
    assert np.array_equal(np.asarray(d.pixels), np.asarray(preprocess.resize(Image.open(path))))


def test_16_bit_greyscale_keeps_its_range(preprocess):
    ramp = Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16))
    pixels = np.asarray(run_decode(encode(ramp, "PNG"), preprocess).pixels)
    assert pixels.min() < 10 and pixels.max() > 245  # scaled to 8 bits, not clipped at 255


def test_transparent_areas_are_white_in_the_thumbnail(preprocess):
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    thumb = Image.open(io.BytesIO(run_decode(encode(clear, "PNG"), preprocess).thumb))
    assert np.asarray(thumb).min() > 245


def test_gif_uses_the_first_frame(preprocess):
    first, second = Image.new("RGB", (32, 32), (250, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 250))
    data = encode(first, "GIF", save_all=True, append_images=[second])
    red = np.asarray(run_decode(data, preprocess).pixels).reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[2] < 50


def test_large_jpegs_decode_in_draft_mode_close_to_a_full_decode(preprocess):
    big = pattern(3, (2400, 1800))
    d = run_decode(encode(big, "JPEG", quality=90), preprocess)
    assert d.decoded_size == (600, 450)  # 1/4 scale: still at least 1.5x the model's 224 px
    assert (d.width, d.height) == (2400, 1800)
    full = preprocess.resize(Image.open(io.BytesIO(encode(big, "JPEG", quality=90))))
    diff = np.abs(np.asarray(d.pixels, dtype=float) - np.asarray(full, dtype=float)).mean()
    assert diff < 3.0


def test_metadata_date_camera_and_captions(preprocess):
    data = encode(pattern(4), "JPEG", exif=exif_bytes(description="a red bicycle", taken="2021:07:04 18:30:00",
                                                      make="Canon", model="Canon EOS 5D"),
                  xmp=xmp_packet("a bicycle by a wall"))
    d = run_decode(data, preprocess)
    assert str(d.taken_at) == "2021-07-04 18:30:00" and d.camera == "Canon EOS 5D"
    assert d.descriptions == [("exif", "a red bicycle"), ("xmp", "a bicycle by a wall")]


def test_camera_placeholders_and_junk_dates_are_not_metadata(preprocess):
    data = encode(pattern(5), "JPEG", exif=exif_bytes(description="OLYMPUS DIGITAL CAMERA", taken="0000:00:00 00:00:00",
                                                      make="NIKON CORPORATION", model="NIKON D750"))
    d = run_decode(data, preprocess)
    assert d.descriptions == [] and d.taken_at is None and d.camera == "NIKON D750"  # make not repeated
    apple = run_decode(encode(pattern(5), "JPEG", exif=exif_bytes(make="Apple", model="iPhone 12")), preprocess)
    assert apple.camera == "Apple iPhone 12"


def test_xmp_description_parsing():
    assert xmp_description(xmp_packet("a lighthouse")) == "a lighthouse"  # x-default wins over "de"
    assert xmp_description(b"<x><y") is None
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    assert xmp_description(evil) is None
    same = Image.open(io.BytesIO(encode(pattern(6), "JPEG", exif=exif_bytes(description="same"),
                                        xmp=xmp_packet("same"))))
    assert descriptions(same, same.getexif()) == [("exif", "same")]


@pytest.mark.parametrize("data,reason", [
    (b"this is text\n", "not an image"),
    (encode(pattern(7, (64, 64)), "JPEG")[:300], "truncated"),
    (bomb_png(100_000, 100_000), "too many pixels"),
])
def test_bad_content_is_refused_with_a_reason(data, reason, preprocess):
    with pytest.raises(BadFile, match=reason):
        run_decode(data, preprocess)


def test_pixel_limit_is_configurable(preprocess):
    data = encode(pattern(8, (300, 200)), "PNG")
    with pytest.raises(BadFile, match=r"too many pixels: 300x200 .* limit of 0.05 MP"):
        run_decode(data, preprocess, limit=50_000)
    assert run_decode(data, preprocess, limit=60_000).width == 300


def test_read_file_hashes_and_refuses_special_files(tmp_path):
    import hashlib

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8" + os.urandom(5000))
    got = read_file(str(photo))
    assert got.sha256 == hashlib.sha256(photo.read_bytes()).hexdigest() and bytes(got.data) == photo.read_bytes()
    assert got.size == 5002 and got.mtime_ns == photo.stat().st_mtime_ns
    (tmp_path / "empty.jpg").touch()
    os.mkfifo(tmp_path / "pipe.jpg")
    for name, reason in (("empty.jpg", "empty file"), ("pipe.jpg", "not a regular file"),
                         ("gone.jpg", "disappeared")):
        with pytest.raises(BadFile, match=reason):
            read_file(str(tmp_path / name))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unreadable_file_is_reported_not_fatal():
    """Tests run as root, whom permissions never stop; so a child process drops to `nobody` and reads a 0600 file
    owned by root. That is the real EACCES a user meets on a library copied from another account."""
    folder = tempfile.mkdtemp(prefix="glance-perm-")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "private.jpg")
    Image.new("RGB", (8, 8)).save(path)
    os.chmod(path, 0o600)
    child = (f"import os, sys; sys.path.insert(0, {str(REPO)!r})\n"
             f"from indexer.decode import read_file, BadFile\n"
             f"os.setgid(65534); os.setuid(65534)  # after the imports: nobody cannot read root's Python either\n"
             f"try:\n    read_file({path!r})\nexcept BadFile as e:\n    print('BadFile:', e)\n")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert "BadFile: permission denied" in out.stdout, out.stderr


def test_a_100_megapixel_jpeg_decodes_in_little_memory(tmp_path):
    """Peak RSS of a process that decodes a 10000x10000 JPEG grows by far less than its 300 MB of pixels."""
    path = tmp_path / "huge.jpg"
    Image.linear_gradient("L").resize((10000, 10000)).convert("RGB").save(path, quality=80)
    child = (f"import sys, resource; sys.path.insert(0, {str(REPO)!r})\n"
             f"from indexer.decode import decode, read_file\n"
             f"from models.preprocess import Preprocess\n"
             f"p = Preprocess.from_folder(__import__('pathlib').Path({str(VISION)!r}))\n"
             f"f = read_file({str(path)!r})\n"
             f"before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             f"d = decode({str(path)!r}, f.data, p, 200_000_000)\n"
             f"after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             f"print(d.width, d.height, d.decoded_size, (after - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    width, height, *_, grown_mb = out.stdout.split()
    assert (int(width), int(height)) == (10000, 10000), out.stderr
    assert int(grown_mb) < 60, out.stdout

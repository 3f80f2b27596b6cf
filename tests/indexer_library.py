"""A generated photo library for the indexer tests: every format, every caption source, one of each bad file.

`make_library(folder)` writes it and returns a `Library` that says what the indexer should find.
Images are small (tens of pixels) and each has its own colour pattern, so every good file has distinct content.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, PngImagePlugin

pillow_heif.register_heif_opener()  # the library holds a HEIC photo

FIXTURE_IMAGES = Path(__file__).resolve().parent / "fixtures" / "nomic-tiny" / "images"
NON_UTF8_NAME = b"caf\xe9.jpg"  # Latin-1 "café.jpg": not valid UTF-8


def xmp_packet(description: str) -> bytes:
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
        f'<rdf:li xml:lang="de">auf Deutsch</rdf:li><rdf:li xml:lang="x-default">{description}</rdf:li>'
        '</rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def pattern(seed: int, size=(48, 32), mode="RGB") -> Image.Image:
    """A distinct, smooth-ish picture per seed (a gradient plus blocks), so hashes and vectors differ."""
    rng = np.random.default_rng(seed)
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3) + (xs[..., None] * rng.uniform(-3, 3, 3)) + (ys[..., None] * rng.uniform(-3, 3, 3))
    blocks = rng.uniform(0, 80, (4, 4, 3)).repeat(-(-h // 4), 0)[:h].repeat(-(-w // 4), 1)[:, :w]
    image = Image.fromarray(np.clip(base + blocks, 0, 255).astype(np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def exif_bytes(orientation=None, description=None, taken=None, make=None, model=None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if description:
        exif[270] = description
    if make:
        exif[271] = make
    if model:
        exif[272] = model
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    return exif.tobytes()


@dataclass
class Library:
    root: Path
    good: dict[str, dict] = field(default_factory=dict)  # relpath -> expected properties
    bad: dict[str, str] = field(default_factory=dict)  # display path relative to root -> words in the reason
    captions_csv: Path | None = None
    captions_jsonl: Path | None = None
    free_texts: list[str] = field(default_factory=list)
    expected_captions: dict[str, set] = field(default_factory=dict)  # relpath -> {(source, text)}
    expected_captions_files: dict[str, set] = field(default_factory=dict)  # from captions.csv / .jsonl

    def path(self, relpath: str) -> Path:
        return self.root / relpath


def _save(lib: Library, relpath: str, image: Image.Image, fmt: str, expect: dict | None = None, **params) -> Path:
    path = lib.root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **params)
    lib.good[relpath] = expect or {}
    return path


def make_library(folder: Path, extras: Path | None = None) -> Library:
    """The library under folder/library; captions files go to `extras` (outside the library), default folder."""
    lib = Library(folder / "library")
    extras = extras or folder
    lib.root.mkdir(parents=True)
    # every format, in nested folders
    _save(lib, "2023/summer/beach.jpg", pattern(1, (64, 48)), "JPEG", quality=90)
    _save(lib, "2023/summer/Sunset.JPEG", pattern(2), "JPEG")  # upper-case extension
    _save(lib, "2023/winter/snow.png", pattern(3), "PNG")
    _save(lib, "2024/a/b/c/deep.webp", pattern(4), "WEBP", quality=90)
    frames = [pattern(5), pattern(6)]
    _save(lib, "2024/anim.gif", frames[0].convert("P"), "GIF", save_all=True, append_images=[frames[1].convert("P")])
    _save(lib, "2024/old.bmp", pattern(7), "BMP")
    _save(lib, "2024/scan.tiff", pattern(8), "TIFF")
    _save(lib, "2024/phone.heic", pattern(9), "HEIF")
    # modes: 16-bit greyscale, palette, RGBA, CMYK (fixtures carry the real-world oddities)
    gray16 = Image.fromarray((np.linspace(0, 65535, 48 * 32).reshape(32, 48)).astype(np.uint16))
    _save(lib, "modes/gray16.png", gray16, "PNG")
    _save(lib, "modes/palette.png", pattern(10).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
    rgba = pattern(11).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    _save(lib, "modes/alpha.png", rgba, "PNG")
    for name in ("cmyk.jpg", "palette.gif", "transparent.png", "exif_rotated.jpg"):
        shutil.copy(FIXTURE_IMAGES / name, lib.root / "modes" / name)
        lib.good[f"modes/{name}"] = {}
    # EXIF: orientation 6 (stored 64x32 sideways, upright 32x64), date, camera, description
    _save(lib, "exif/rotated.jpg", pattern(12, (64, 32)), "JPEG", expect={"width": 32, "height": 64},
          exif=exif_bytes(orientation=6))
    _save(lib, "exif/described.jpg", pattern(13), "JPEG",
          expect={"taken_at": "2021-07-04 18:30:00", "camera": "Canon EOS 5D"},
          exif=exif_bytes(description="a red bicycle against a brick wall", taken="2021:07:04 18:30:00",
                          make="Canon", model="Canon EOS 5D"))
    lib.expected_captions["exif/described.jpg"] = {("exif", "a red bicycle against a brick wall")}
    _save(lib, "exif/placeholder.jpg", pattern(14), "JPEG", exif=exif_bytes(description="OLYMPUS DIGITAL CAMERA"))
    _save(lib, "xmp/lighthouse.jpg", pattern(15), "JPEG", xmp=xmp_packet("a lighthouse at dusk"))
    lib.expected_captions["xmp/lighthouse.jpg"] = {("xmp", "a lighthouse at dusk")}
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet("a kite over the dunes").decode())
    _save(lib, "xmp/kite.png", pattern(16), "PNG", pnginfo=info)
    lib.expected_captions["xmp/kite.png"] = {("xmp", "a kite over the dunes")}
    # sidecars, both forms
    _save(lib, "captioned/dog.jpg", pattern(17), "JPEG")
    (lib.root / "captioned/dog.jpg.txt").write_text("a dog running on the beach\n")
    _save(lib, "captioned/cat.png", pattern(18), "PNG")
    (lib.root / "captioned/cat.txt").write_text("\ufeffa cat asleep on a sofa")
    lib.expected_captions["captioned/dog.jpg"] = {("sidecar", "a dog running on the beach")}
    lib.expected_captions["captioned/cat.png"] = {("sidecar", "a cat asleep on a sofa")}
    # a plain photo for the captions files, plus things that must be ignored silently
    _save(lib, "captioned/plain.jpg", pattern(19), "JPEG")
    _save(lib, ".hidden/secret.jpg", pattern(20), "JPEG")
    lib.good.pop(".hidden/secret.jpg")
    _save(lib, "2024/.dotfile.jpg", pattern(21), "JPEG")
    lib.good.pop("2024/.dotfile.jpg")
    (lib.root / "notes.txt").write_text("not a photo")
    (lib.root / "@eaDir").mkdir()
    _save(lib, "@eaDir/thumb.jpg", pattern(22), "JPEG")
    lib.good.pop("@eaDir/thumb.jpg")
    # a folder symlink inside the library reaching a folder indexed anyway: indexed once
    os.symlink("summer", lib.root / "2023/summer-link")
    _write_bad_files(lib)
    _write_captions_files(lib, extras)
    return lib


def _write_bad_files(lib: Library) -> None:
    bad = lib.root / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    lib.bad["bad/empty.jpg"] = "empty file"
    good_jpeg = io.BytesIO()
    pattern(30, (64, 64)).save(good_jpeg, format="JPEG", quality=95)
    (bad / "truncated.jpg").write_bytes(good_jpeg.getvalue()[: len(good_jpeg.getvalue()) // 2])
    lib.bad["bad/truncated.jpg"] = "truncated"
    (bad / "notes.jpg").write_text("this is a text file with an image extension\n")
    lib.bad["bad/notes.jpg"] = "not an image"
    (bad / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    lib.bad["bad/bomb.png"] = "too many pixels"
    os.mkfifo(bad / "pipe.jpg")  # opening a FIFO for reading blocks forever: must be refused unopened
    lib.bad["bad/pipe.jpg"] = "not a regular file"
    os.symlink("missing.jpg", bad / "broken.jpg")
    lib.bad["bad/broken.jpg"] = "broken symlink"
    os.symlink("loop.jpg", bad / "loop.jpg")
    lib.bad["bad/loop.jpg"] = "symlink loop"
    os.symlink("..", bad / "cycle")  # a folder symlink back to an ancestor
    lib.bad["bad/cycle"] = "symlink loop"


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb in spirit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _write_captions_files(lib: Library, extras: Path) -> None:
    lib.free_texts = ["a photo of a mountain lake", "a birthday cake with candles", "receipts"]
    lib.captions_csv = extras / "captions.csv"
    rows = [("path", "caption"),
            (str(lib.root / "captioned/plain.jpg"), "two kayaks on a calm river"),
            (str(lib.root / "captioned/plain.jpg"), "morning mist, \"quoted\", and commas"),
            ("", lib.free_texts[0]),
            ("", lib.free_texts[1])]
    import csv

    with open(lib.captions_csv, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    lib.captions_jsonl = extras / "captions.jsonl"
    lines = [{"path": "2023/summer/beach.jpg", "captions": ["sand and waves", "a beach towel"]},  # relative to a root
             {"text": lib.free_texts[2]}]
    lib.captions_jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    lib.expected_captions_files = {
        "captioned/plain.jpg": {("file", "two kayaks on a calm river"), ("file", 'morning mist, "quoted", and commas')},
        "2023/summer/beach.jpg": {("file", "sand and waves"), ("file", "a beach towel")},
    }


def snapshot(root: Path) -> dict:
    """Every entry under root (not following symlinks): type, size, mtime and content hash, to prove nothing changed."""
    import hashlib

    state = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
            state[path] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return state


def dump(db: Path | str, storage_options: dict | None = None) -> dict:
    """Every row of every table (indexed_at and last_indexed aside), sorted by key, from an index whose last run
    finished: its published version pair (checked, then left out: versions count commits, not data) is the
    tables' current one."""
    import store as st

    store = st.Store(db, storage_options=storage_options)
    meta = {k: v for k, v in store.meta().items() if k != st.LAST_INDEXED}
    assert meta.pop(st.SNAPSHOT) == {name: store.table(name).version for name in (st.IMAGES, st.CAPTIONS)}
    images = store.table(st.IMAGES).to_arrow().drop_columns(["indexed_at"]).to_pylist()
    captions = store.table(st.CAPTIONS).to_arrow().to_pylist()
    return {"images": sorted(images, key=lambda r: r["id"]), "captions": sorted(captions, key=lambda r: r["id"]),
            "meta": meta}


def assert_same_rows(got: dict, want: dict) -> None:
    """Same rows, same values; vectors within float noise (batches of other sizes round differently)."""
    assert got["meta"] == want["meta"]
    for table in ("images", "captions"):
        assert [r["id"] for r in got[table]] == [r["id"] for r in want[table]], table
        for a, b in zip(got[table], want[table]):
            a, b = dict(a), dict(b)
            assert np.allclose(a.pop("vector"), b.pop("vector"), atol=1e-5), (table, a["id"])
            assert a == b, (table, a["id"])

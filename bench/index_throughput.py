"""Indexing throughput on CPU: how well does decoding hide behind the model?

Generates N photo-like 12-megapixel JPEGs once (4000x3000, ~2-4 MB each, every fourth one stored sideways with
EXIF orientation 6) into a cache folder outside the repo, writes the full-size Nomic Embed Vision v1.5
architecture with random weights (models/synthetic.py; speed does not depend on the weights), then measures:
  model-only:  VisionEncoder.embed_pixels on ready-made 224x224 tensors, at the indexer's batch size and precision,
               over as many images as the indexing run (the same batches, the last one partial);
  end-to-end:  the indexer's Python API on the folder, into a fresh index: walk, read, sha256, draft-mode JPEG
               decode, EXIF transpose, resize, thumbnail, inference, LanceDB commits, index maintenance.
Both run the tower through torch.compile, as `glance index` does from COMPILE_FROM photos to embed, i.e. on the
libraries Glance is for (`--compile off` for the eager tower; the JSON says which, and how long compiling took).
The model is loaded once and shared, so neither figure includes loading it; LanceDB is imported before the
timed run for the same reason (a fixed ~1-3 s per process, paid once by any run however many photos it
indexes). Model-only is measured before and after the indexing run, and the faster of the two is used.
It prints both in images/s, their ratio (end-to-end / model-only), the process's peak RSS, and how close the
model comes to the hardware: the tower's GFLOP per image (counted by torch's FlopCounterMode on a meta-device
copy, attention included) times model-only images/s, against a 2048x2048 bf16 matmul measured in the same run
(the practical peak of this CPU's bf16 units: AMX tiles where it has them, AVX512-BF16 otherwise).

Run from the repo root:
    python bench/index_throughput.py                       # 300 images (generated once, ~2 min; run ~2 min on 2 cores)
    python bench/index_throughput.py --images 40 --json
    python bench/index_throughput.py --workers 2 --threads 2 --batch-size 16
    python bench/index_throughput.py --images 120 --compile off --json  # the eager tower
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
# Random-weight models are written in the official layout of the tiny fixture (configs, tokenizer).
TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nomic-tiny"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the network

import numpy as np  # noqa: E402
import core  # noqa: E402,F401 - its process settings come before torch, as in `glance index`
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from indexer.decode import decode, read_file  # noqa: E402
from indexer.pipeline import (COMPILE_FROM, IndexOptions, auto_batch_size, default_workers, index,  # noqa: E402
                              wants_compile)
from models import VisionEncoder  # noqa: E402
from models.device import cpu_name  # noqa: E402
from models.encoders import cpu_has_amx, set_threads  # noqa: E402
from models.preprocess import Preprocess  # noqa: E402
from models.synthetic import write_text, write_vision  # noqa: E402

SIZE = (4000, 3000)
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance-bench" / "jpeg-12mp-v1"


def make_photo(args: tuple[Path, int]) -> None:
    """Smooth colour fields with sensor-like noise: compresses like a camera JPEG, not like white noise."""
    path, seed = args
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
    detail = np.asarray(small, dtype=np.float32) + rng.normal(0, 12, (375, 500, 3))
    big = Image.fromarray(np.clip(detail, 0, 255).astype(np.uint8)).resize(SIZE, Image.BICUBIC)
    pixels = np.asarray(big, dtype=np.int16) + rng.integers(-4, 5, (SIZE[1], SIZE[0], 1), dtype=np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "BenchCam", "BenchCam 12"
    if seed % 4 == 3:
        exif[0x0112] = 6  # stored sideways, like a portrait from a phone
    tmp = path.with_suffix(".tmp")
    image.save(tmp, format="JPEG", quality=90, exif=exif.tobytes())
    os.replace(tmp, path)  # a killed generation never leaves a half-written photo in the cache


def photos(count: int, cache: Path) -> Path:
    folder = cache / f"n{count}"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(folder / f"IMG_{i:04d}.jpg", i) for i in range(count)]
    missing = [t for t in todo if not t[0].exists()]
    if missing:
        print(f"generating {len(missing)} 12-MP JPEGs into {folder} (once) ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(os.cpu_count() or 2, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(make_photo, missing))
    return folder


def write_checkpoints(folder: Path) -> tuple[Path, Path]:
    """Full-size random-weight checkpoints in the official layout. The text model is only needed for its
    config (no captions here, so the indexer never loads it)."""
    vision = write_vision(folder / "nomic-embed-vision-v1.5", size="full", dtype=torch.float32, template=TEMPLATE)
    text = write_text(folder / "nomic-embed-text-v1.5", size="full", dtype=torch.float16, template=TEMPLATE)
    return vision, text


def model_only(vision: VisionEncoder, folder: Path, batch: int, images: int) -> float:
    """images/s of the forward pass alone, on real preprocessed inputs at the given batch size, over as many
    images as the indexing run embeds (so both figures see the same share of any other load on the machine)."""
    files = sorted(folder.glob("*.jpg"))[:batch]
    pixels = [decode(str(f), read_file(str(f)).data, vision.preprocess, 10**9).pixels for f in files]
    while len(pixels) < batch:
        pixels += pixels[: batch - len(pixels)]
    tensor = vision.preprocess.to_tensor(pixels)
    vision.embed_pixels(tensor)  # warm-up
    done, start = 0, time.perf_counter()
    while done < images:
        n = min(batch, images - done)
        vision.embed_pixels(tensor[:n])
        done += n
    return images / (time.perf_counter() - start)


def matmul_gflops(dtype: torch.dtype = torch.bfloat16, side: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of a square matmul on all torch threads: the best of repeated timings over ~`seconds`."""
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    a @ b  # warm-up: oneDNN picks and packs its kernel once
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * side**3 / best / 1e9


def model_gflop_per_image(vision: VisionEncoder) -> float:
    """FLOPs of one forward pass of the tower (multiply-adds x 2), on a weightless meta-device copy."""
    from torch.utils.flop_counter import FlopCounterMode

    from models.vision import NomicVisionModel

    with torch.device("meta"):
        model = NomicVisionModel(vision.config).to("meta").requires_grad_(False)  # its RoPE tables are built on the CPU
        pixels = torch.empty(1, 3, *vision.preprocess.input_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(pixels)
    return counter.get_total_flops() / 1e9



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch-size", type=int, help="default: the indexer's own choice")
    parser.add_argument("--workers", type=int, help="decoding threads (default: the indexer's own choice)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where the vision model runs (decoding stays on the CPU)")
    parser.add_argument("--compile", default="on", choices=("auto", "on", "off"),
                        help="torch.compile the vision model, as `glance index --compile`. Default on: as the indexer "
                             f"runs a library of {COMPILE_FROM} photos or more (auto: its rule for --images). Compiled "
                             "before both timed runs, so neither counts it")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the generated JPEGs are kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    folder = photos(args.images, args.cache)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="glance-bench-") as tmp:
        tmp = Path(tmp)
        # in another process, so that building the random models does not count in this one's peak RSS
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            vision_dir, text_dir = pool.submit(write_checkpoints, tmp).result()
        vision = VisionEncoder(str(vision_dir), args.precision, args.device)
        config = json.loads((vision_dir / "config.json").read_text())
        batch = args.batch_size or auto_batch_size(Preprocess.from_folder(vision_dir), config["n_embd"],
                                                   config["n_head"], device=vision.device)
        workers = args.workers or default_workers()
        started = time.perf_counter()
        import lancedb  # noqa: F401 - what the indexer's first table access would import inside the timed run
        import_seconds = time.perf_counter() - started
        started = time.perf_counter()
        compiled = wants_compile(args.compile, args.images) and vision.compile(batch)
        compile_seconds = time.perf_counter() - started
        forward_before = model_only(vision, folder, batch, args.images)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        summary = index(IndexOptions([str(folder)], db=tmp / "db", vision_model=str(vision_dir),
                                     text_model=str(text_dir), encoders=(vision, None), batch_size=batch,
                                     workers=workers, threads=args.threads, precision=args.precision,
                                     device=args.device, compile=args.compile,
                                     progress=sys.stderr.isatty()))
        seconds = time.perf_counter() - start
        assert summary.added == args.images and not summary.problems, summary.as_dict()
        shutil.rmtree(tmp / "db")
        # measured on both sides of the indexing run; the faster one counts (other load on a shared machine
        # slows either one, and the ratio must not flatter the indexer)
        forward = max(forward_before, model_only(vision, folder, batch, args.images))
    end_to_end = args.images / seconds
    # The model's share of the peak of the precision it runs in: bf16 units where the probe chose bf16; on a CPU
    # without them (AVX2 only) bf16 is emulated at a few GFLOP/s, so fp32 is both the path and the peak there.
    bf16_peak, fp32_peak = matmul_gflops(torch.bfloat16), matmul_gflops(torch.float32)
    gflop = model_gflop_per_image(vision)
    peak = bf16_peak if vision.precision.path != "fp32" else fp32_peak
    result = {
        "images": args.images, "megapixels": SIZE[0] * SIZE[1] / 1e6, "batch_size": batch, "workers": workers,
        "torch_threads": torch.get_num_threads(), "precision": vision.precision.path, "device": str(vision.device),
        "cpus": os.cpu_count(),
        "cpu": cpu_name(), "cpu_amx": cpu_has_amx(),
        "model_only_ips": round(forward, 2), "end_to_end_ips": round(end_to_end, 2),
        "end_to_end_ratio": round(end_to_end / forward, 3), "end_to_end_seconds": round(seconds, 1),
        "lancedb_import_seconds": round(import_seconds, 2),
        "compiled": compiled, "compile_seconds": round(compile_seconds, 1),
        "matmul_bf16_gflops": round(bf16_peak, 1), "matmul_fp32_gflops": round(fp32_peak, 1),
        "peak_precision": "fp32" if peak is fp32_peak else "bf16", "model_gflop_per_image": round(gflop, 2),
        "model_gflops": round(forward * gflop), "model_fraction_of_peak": round(forward * gflop / peak, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_before_indexing": round(rss_before),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.images} JPEGs of {result['megapixels']:.0f} MP, batch {batch}, {workers} decoding thread(s), "
          f"{result['torch_threads']} torch thread(s), {result['precision']}"
          f"{f', compiled in {compile_seconds:.1f} s' if compiled else ''}, {result['cpus']} CPUs "
          f"({result['cpu']}, AMX: {'yes' if result['cpu_amx'] else 'no'})")
    print(f"  model-only forward : {forward:7.2f} images/s  "
          f"({result['model_gflops']} GFLOP/s at {gflop:.1f} GFLOP/image)")
    print(f"  end-to-end indexing: {end_to_end:7.2f} images/s  ({seconds:.1f} s)")
    print(f"  ratio              : {result['end_to_end_ratio']:.3f}")
    print(f"  matmul 2048^2      : bf16 {bf16_peak:7.0f}, fp32 {fp32_peak:7.0f} GFLOP/s; the model reaches "
          f"{result['model_fraction_of_peak']:.0%} of {result['peak_precision']}'s")
    print(f"  peak RSS           : {result['peak_rss_mb']} MB "
          f"(model loaded: {result['peak_rss_mb_before_indexing']} MB)")

if __name__ == "__main__":
    main()

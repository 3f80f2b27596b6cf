"""Embedding throughput on CPU: the model-card recipe vs Glance's batched fp32 path vs Glance's fast path.

Full-size Nomic Embed Vision/Text v1.5 models are built from the official configs with random weights
(written to a temp folder in the official Hub layout by models/synthetic.py, so nothing is downloaded).
Speed does not depend on the weights; the cosine check does a little, so treat it as a sanity check and
rely on the real-weight probe that precision='auto' runs at load time.

Three paths, each timed as images/s and text queries/s (warm-up, then best of --repeats):
  (a) naive:  what a user copies from the model card: one image at a time through HF CLIPImageProcessor
              and an fp32 forward (our NomicVisionModel: the card's remote code cannot run here); one
              query at a time through the tokenizer, an fp32 forward, mean pooling, layer norm, L2.
  (b) batched fp32: VisionEncoder(precision='fp32').embed_images / TextEmbedder(...).embed_queries.
  (c) fast:   the same with precision='auto' (bf16 where the CPU has native bf16 and the probe allows).
Image preprocessing (resize/normalize of decoded 12-MP photos) is inside the timing of every path.
It prints b/a and c/a, and the minimum cosine of (c) against (b) with the 0.999 bound.

Run from the repo root:
    python bench/embed_throughput.py                  # table (about 3-4 minutes on 2 cores)
    python bench/embed_throughput.py --json           # the same figures as one JSON object
    python bench/embed_throughput.py --images 16 --repeats 2 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
# Random-weight models are written in the official layout of the tiny fixture (configs, tokenizer).
TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nomic-tiny"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the network

import numpy as np  # noqa: E402
import core  # noqa: E402,F401 - its process settings come before torch, as in `glance index`
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from models import cpu_has_bf16, load_pair, with_prefix  # noqa: E402
from models.encoders import MIN_COSINE_TO_FP32  # noqa: E402
from models.synthetic import write_pair  # noqa: E402

QUERIES = [
    "dog", "sunset", "receipts", "my passport", "birthday cake", "snow on mountains", "a red car",
    "whiteboard notes", "cat sleeping on a sofa", "people laughing at a wedding", "screenshot of a chat",
    "beach with palm trees", "a plate of sushi", "kids playing football in the park", "old family photo",
    "the eiffel tower at night", "handwritten recipe card", "a bicycle leaning against a brick wall",
    "fireworks over the river", "selfie in the mirror", "a bowl of ramen with a soft boiled egg",
    "my car's license plate", "parking ticket", "a foggy forest path in autumn", "baby's first steps",
    "christmas tree with presents underneath", "hiking boots", "a map of the subway",
    "graduation ceremony with caps in the air", "close up of a bee on a yellow flower", "wifi password",
    "lecture slides about linear algebra", "a crowded street market in asia", "rainbow", "broken phone screen",
    "two people holding hands on a bridge at sunset", "a cup of coffee and a croissant on a wooden table",
    "the whiteboard from monday's meeting", "a black and white photo of my grandparents", "concert stage lights",
    "sailboats in a harbour", "medical prescription", "a horse in a green field", "airport departure board",
    "a plate of pasta with tomato sauce and basil", "my dog wearing a raincoat", "a tent under the stars",
    "invoice from the plumber", "skyline of new york from the water", "tulips", "a cozy reading nook",
    "empty swimming pool", "a chalkboard menu outside a cafe", "someone surfing a big wave", "house keys",
    "the view from the hotel balcony in lisbon", "a messy desk with two monitors and a keyboard",
    "ticket stub from the museum", "sheep on a country road", "graffiti on a train", "ice cream cone",
    "the northern lights over a snowy lake", "toddler asleep in a car seat", "street food at night",
]


def photo_like_images(count: int, megapixels: float, seed: int = 0) -> list[Image.Image]:
    """Decoded RGB photos at a phone camera's size (4:3, 12 MP by default): gradients, blotches, sensor noise.

    Every fourth one is portrait, as in a real photo library; all paths see the same list. A handful of
    distinct photos are generated and repeated, which keeps set-up short without changing the work done.
    """
    rng = np.random.default_rng(seed)
    long_side = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    short_side = long_side * 3 // 4
    distinct = []
    for i in range(min(count, 8)):
        w, h = (short_side, long_side) if i % 4 == 3 else (long_side, short_side)
        t = (np.linspace(0, 0.5, w, dtype=np.float32)[None, :] + np.linspace(0, 0.5, h, dtype=np.float32)[:, None])
        start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        base = start + (end - start) * t[..., None]  # diagonal gradient
        blotches = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
                              .resize((w, h), Image.BICUBIC), dtype=np.float32)
        noise = rng.normal(0, 8, (h, w, 1)).astype(np.float32)
        pixels = 0.6 * base + 0.4 * blotches + noise
        distinct.append(Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB"))
    return [distinct[i % len(distinct)] for i in range(count)]


def queries(count: int) -> list[str]:
    return [QUERIES[i % len(QUERIES)] for i in range(count)]


def best_of(run, items: list, warmup_items: list, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of `run(items)` after one warm-up call (oneDNN builds its kernels on first use)."""
    run(warmup_items)
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run(items)
        times.append(time.perf_counter() - start)
    return min(times), out


# --- (a) the model-card recipe, one item per call ----------------------------------------------------

def naive_image_path(folder: Path, fp32_model: torch.nn.Module):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(folder))

    @torch.no_grad()  # granted even if a user forgets it: autograd bookkeeping would inflate the ratios
    def embed(images: list[Image.Image]) -> torch.Tensor:
        out = []
        for image in images:
            pixels = processor(images=image, return_tensors="pt")["pixel_values"]
            out.append(F.normalize(fp32_model(pixels), dim=-1))
        return torch.cat(out)

    return embed


def naive_text_path(encoder):
    @torch.no_grad()
    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for text in texts:
            tokens = encoder.tokenize([with_prefix(text)])
            hidden = encoder.model(tokens["input_ids"], tokens["attention_mask"])
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean pooling, as on the card
            pooled = F.layer_norm(pooled, (pooled.shape[-1],))
            out.append(F.normalize(pooled, dim=-1))
        return torch.cat(out)

    return embed


# --- the benchmark --------------------------------------------------------------------------------

def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def measure(args) -> dict:
    images, texts = photo_like_images(args.images, args.megapixels), queries(args.queries)
    naive_images = images[:args.naive_images]
    batch = args.batch_size
    with tempfile.TemporaryDirectory(prefix="glance-bench-") as tmp:
        setup_start = time.perf_counter()
        vision_dir, text_dir = write_pair(Path(tmp), size="full", seed=0, dtype=torch.float32, template=TEMPLATE)
        os.sync()  # write the ~0.9 GB back now, so disk writeback does not run during the timings
        vision32, text32 = load_pair(str(vision_dir), str(text_dir), precision="fp32", threads=args.threads)
        vision_fast, text_fast = load_pair(str(vision_dir), str(text_dir), precision="auto", threads=args.threads)
        # (a) runs the very same fp32 modules as (b): only the recipe around them differs
        naive_images_fn = naive_image_path(vision_dir, vision32.model)
        naive_text_fn = naive_text_path(text32.encoder)
        # name -> (embed images, embed queries, images it runs on, warm-up sizes: one batch, or one item)
        paths = {
            "a": (naive_images_fn, naive_text_fn, naive_images, 1, 1),
            "b": (lambda ims: vision32.embed_images(ims, batch_size=batch), text32.embed_queries,
                  images, batch, 32),  # TextEmbedder batches queries by 32 itself
            "c": (lambda ims: vision_fast.embed_images(ims, batch_size=batch), text_fast.embed_queries,
                  images, batch, 32),
        }
        setup_s = time.perf_counter() - setup_start

        results, vectors = {}, {}
        for name, (embed_images, embed_queries, path_images, warm_images, warm_texts) in paths.items():
            image_s, image_vecs = best_of(embed_images, path_images, path_images[:warm_images], args.repeats)
            text_s, text_vecs = best_of(embed_queries, texts, texts[:warm_texts], args.repeats)
            results[name] = {"images": len(path_images), "images_per_s": len(path_images) / image_s,
                             "queries": len(texts), "queries_per_s": len(texts) / text_s}
            vectors[name] = (image_vecs, text_vecs)

    n_naive = len(naive_images)
    cos_images, cos_text = min_cosine(vectors["c"][0], vectors["b"][0]), min_cosine(vectors["c"][1], vectors["b"][1])
    return {
        "config": {"images": len(images), "naive_images": n_naive, "image_size": f"{images[0].width}x{images[0].height} ({args.megapixels:g} MP, every 4th portrait)",
                   "queries": len(texts), "repeats": args.repeats, "batch_size": batch,
                   "threads": torch.get_num_threads(), "torch": torch.__version__, "setup_s": round(setup_s, 1)},
        "cpu_has_bf16": cpu_has_bf16(),
        "auto_precision": {"vision": vision_fast.precision.name, "text": text_fast.precision.name,
                           "vision_probe_cosine": vision_fast.precision.cosine_to_fp32,
                           "text_probe_cosine": text_fast.precision.cosine_to_fp32},
        "paths": results,
        "ratios": {f"{p}/a": {kind: results[p][f"{kind}_per_s"] / results["a"][f"{kind}_per_s"]
                              for kind in ("images", "queries")} for p in ("b", "c")},
        # (c) against (b): what the fast path costs in accuracy; (a) against (b): both compute the same thing
        "min_cosine_c_vs_b": {"images": cos_images, "queries": cos_text},
        "min_cosine_a_vs_b": {"images": min_cosine(vectors["a"][0], vectors["b"][0][:n_naive]),
                              "queries": min_cosine(vectors["a"][1], vectors["b"][1])},
        "bound": MIN_COSINE_TO_FP32,
        "fast_path_holds_bound": min(cos_images, cos_text) >= MIN_COSINE_TO_FP32,
    }


def print_report(r: dict) -> None:
    cfg, auto = r["config"], r["auto_precision"]
    labels = {"a": "(a) naive: 1 at a time, CLIPImageProcessor, fp32",
              "b": f"(b) Glance batched fp32 (batch {cfg['batch_size']})",
              "c": f"(c) Glance fast (auto: vision {auto['vision']}, text {auto['text']})"}
    print(f"{cfg['images']} images ({cfg['naive_images']} for naive), {cfg['image_size']}; {cfg['queries']} queries; "
          f"best of {cfg['repeats']}; {cfg['threads']} threads; torch {cfg['torch']}; setup {cfg['setup_s']} s")
    print(f"CPU native bf16: {r['cpu_has_bf16']}; precision='auto' chose vision {auto['vision']} "
          f"(probe cosine {auto['vision_probe_cosine']:.5f}), "
          f"text {auto['text']} (probe cosine {auto['text_probe_cosine']:.5f})\n")
    print(f"{'path':<58}{'images/s':>10}{'queries/s':>11}")
    for name, row in r["paths"].items():
        print(f"{labels[name]:<58}{row['images_per_s']:>10.2f}{row['queries_per_s']:>11.1f}")
    print()
    for ratio, row in r["ratios"].items():
        print(f"speed-up {ratio}:  images {row['images']:5.2f}x   queries {row['queries']:5.2f}x")
    cos, naive = r["min_cosine_c_vs_b"], r["min_cosine_a_vs_b"]
    print(f"\nmin cosine (c) vs (b):  images {cos['images']:.6f}   queries {cos['queries']:.6f}   "
          f"-> {'holds' if r['fast_path_holds_bound'] else 'BREAKS'} the {r['bound']} bound")
    print(f"min cosine (a) vs (b):  images {naive['images']:.6f}   queries {naive['queries']:.6f}   "
          f"(same maths; images differ only by HF's resize)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32, help="photos for the batched paths (b, c)")
    parser.add_argument("--naive-images", type=int, default=8, help="photos for the naive path (a): it is slow")
    parser.add_argument("--megapixels", type=float, default=12.0, help="photo size (phones: 12 MP)")
    parser.add_argument("--queries", type=int, default=64, help="text queries for every path")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the best counts")
    parser.add_argument("--batch-size", type=int, default=16, help="image batch size for (b) and (c)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    args.naive_images = max(1, min(args.naive_images, args.images))
    if args.images < 1 or args.queries < 1 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--images, --queries, --repeats and --batch-size must be at least 1")
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()

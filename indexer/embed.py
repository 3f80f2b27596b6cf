"""`glance embed`: print embeddings as JSON lines, for debugging and parity checks."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from core import images
from core.errors import UsageError
from models import DEFAULT_TEXT, DEFAULT_VISION, PRESETS


class AppendInput(argparse.Action):
    """Keeps --text and --image in the order given on the command line."""

    def __call__(self, parser, namespace, value, option_string=None):
        kind = "text" if option_string == "--text" else "image"
        namespace.inputs = [*(namespace.inputs or []), (kind, value)]


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "embed", help="print embeddings of texts and images as JSON lines",
        description="Embed texts and images and print one JSON object per line, in input order:\n"
                    '  {"kind": "text"|"image", "input": ..., "dim": N, "vector": [...]}\n'
                    "Texts get the `search_query: ` prefix unless they start with a Nomic task prefix.",
        epilog="example: glance embed --text 'a red bicycle' --image photo.jpg --dim 256",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--vision-model", dest="vision_model", metavar="M",
                   help=f"a preset ({', '.join(PRESETS)}), Hub repo id or local folder (default: {DEFAULT_VISION})")
    p.add_argument("--text-model", metavar="M", help=f"Hub repo id or local folder (default: the preset's, else "
                                                  f"{DEFAULT_TEXT})")
    p.add_argument("--dim", type=int, help="Matryoshka dimension 768/512/256/128/64 (default: the model's full size)")
    p.add_argument("--text", action=AppendInput, dest="inputs", metavar="T", help="a text to embed (repeatable)")
    p.add_argument("--image", action=AppendInput, dest="inputs", metavar="PATH", help="an image file to embed (repeatable)")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"),
                   help="fp32 (default here: exact vectors for debugging and parity checks); auto: the indexer's "
                        "fast path, bf16 where the CPU has it and it stays within cosine 0.999 of fp32")
    p.add_argument("--threads", type=int, help="CPU threads for inference (default: all cores)")
    p.set_defaults(run=run)


def run(args) -> None:
    if not args.inputs:
        raise UsageError("nothing to embed: give --text T and/or --image PATH")
    images = {path: open_image(path) for kind, path in args.inputs if kind == "image"}  # fail before loading models
    from models import check_dim, load_pair  # torch loads only now: --help stays instant
    vision, text = load_pair(args.vision_model, args.text_model, args.precision, args.threads)
    dim = check_dim(args.dim, text.dim, text.version)
    for kind, value in args.inputs:
        if kind == "text":
            vector = text.embed_queries([value], dim)[0]  # with the family's query prefix, if it has one
        else:
            vector = vision.embed_images([images[value]], dim)[0]
        print(json.dumps({"kind": kind, "input": value, "dim": dim, "vector": [round(float(x), 7) for x in vector]}))
        sys.stdout.flush()


def open_image(path: str) -> Image.Image:
    if not Path(path).is_file():
        raise UsageError(f"no such image file: {path}")
    return images.open_image(path, name=path, max_pixels=images.LIBRARY_MAX_MEGAPIXELS * 1_000_000,
                             limit_hint="the indexer's default limit")

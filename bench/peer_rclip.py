"""Glance against rclip: the same architecture (open_clip ViT-B-32-256) indexing the same photos, side by side.

Photos: bench/index_throughput.py's N generated 12-megapixel JPEGs (4000x3000, every fourth stored sideways).
Models: both run open_clip's ViT-B-32-256 (the architecture rclip ships, trained on DataComp) with one set of
random weights (speed does not depend on them): written once in the Hub layout for Glance
(models/synthetic.py), and exported from those same weights the way rclip's scripts/convert_model.py does
(fp32 ONNX, opset 18, dynamic batch) into the folder rclip reads its model from (RCLIP_DATADIR).
rclip is PyPI's rclip==4.0.8, unmodified, in its own venv (Python >= 3.12; created with --install-rclip).

Each run is one fresh child process into a fresh index, so its peak RSS (os.wait4) is its own; runs alternate
rclip, Glance, rclip, Glance, ... (--rounds) so that other load on the machine falls on both. Each tool runs as
its CLI would on this machine:
  rclip:   RClip.ensure_index (the indexing before every search): loader threads read, hash (first MiB) and
           draft-decode each JPEG, resize + centre-crop to 256 px; ONNX Runtime fp32 in batches of 8 (its -b
           default); rows into SQLite.
  Glance:  indexer.pipeline.index: walk, read, sha256, draft-mode decode, EXIF transpose, resize, thumbnail,
           the encoder at the indexer's own batch size and precision (bf16 where the CPU has it), LanceDB
           commits, index maintenance.
Measured, per tool (median over the rounds):
  end-to-end: images / seconds of the indexing call; the model is loaded before the clock starts, in both;
  model-only: the forward pass alone on ready 256x256 tensors at that tool's batch size and precision
              (rclip: its ONNX Runtime session at batch 8; Glance: bench/index_throughput.py's model_only),
              before and after the indexing run, the faster one counting;
  peak RSS:   of the whole child process (imports, model, indexing).
It prints Glance/rclip for end-to-end (the target: >= 2x on a CPU with AMX, >= 1.3x without) and model-only,
and each tool's end-to-end / model-only.

Run from the repo root (the first run generates the photos, ~1.5 min, and exports the model, ~15 s):
    python bench/peer_rclip.py --install-rclip        # once: rclip's venv and the ONNX exporter, into the cache
    python bench/peer_rclip.py                        # 200 images, 2 rounds (~3 min on 2 cores)
    python bench/peer_rclip.py --images 40 --rounds 1 --json
    python bench/peer_rclip.py --glance-precision fp32  # Glance as on a CPU without AMX/AVX512-BF16 (target 1.3x)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

# This process only starts the others and stays small (torch is imported by the children only): a child's peak
# RSS, as the kernel reports it at os.wait4, starts from its parent's at the fork.
BENCH_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance-bench"
PHOTOS = BENCH_CACHE / "jpeg-12mp-v1"  # bench/index_throughput.py's CACHE: the same photos
SIZE = (4000, 3000)  # theirs (index_throughput.SIZE)
ARCH = "ViT-B-32-256"
RCLIP_VERSION = "4.0.8"
RCLIP_ENV = BENCH_CACHE / f"rclip-{RCLIP_VERSION}"
RCLIP_BATCH = 8  # rclip's --indexing-batch-size default
# What rclip looks for in its data folder (rclip/model_download.py): the model files and the legal files
# it downloads next to them.
RCLIP_MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
RCLIP_LEGAL_FILES = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")
TOKENIZER_VOCAB = Path("tokenizer") / "bpe_simple_vocab_16e6.txt.gz"
# The exporter is not a Glance dependency: it goes into the cache, next to rclip's venv.
ONNX_EXPORTER = BENCH_CACHE / "onnx-export"
ONNX_PACKAGES = ("onnx==1.23.2", "protobuf==7.36.2", "ml_dtypes==0.7.0")  # numpy comes from Glance's venv
GLANCE_MODEL = BENCH_CACHE / f"open_clip-{ARCH}-seed0"
RCLIP_MODELS = BENCH_CACHE / f"rclip-models-{ARCH}-seed0"
INSTALL_HINT = "pass --install-rclip to install it there (once)"


def default_rclip_python() -> str | None:
    candidates = [Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python", shutil.which("python3.12"),
                  shutil.which("python3.13")]
    return next((str(c) for c in candidates if c and Path(c).is_file()), None)


# ----- setup (each step cached) ------------------------------------------------------------------------------
def rclip_python(install: bool, base_python: str | None) -> Path:
    python, done = RCLIP_ENV / "bin" / "python", RCLIP_ENV / ".installed"
    if done.is_file():
        return python
    if not install:
        sys.exit(f"rclip {RCLIP_VERSION} is not installed in {RCLIP_ENV}; {INSTALL_HINT}")
    if not base_python:
        sys.exit("rclip needs Python >= 3.12: give one with --rclip-python")
    print(f"installing rclip {RCLIP_VERSION} into {RCLIP_ENV} ...", file=sys.stderr, flush=True)
    shutil.rmtree(RCLIP_ENV, ignore_errors=True)
    subprocess.run([base_python, "-m", "venv", str(RCLIP_ENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"rclip=={RCLIP_VERSION}"], check=True)
    done.touch()  # only a complete install counts
    return python


def onnx_exporter(install: bool) -> Path:
    done = ONNX_EXPORTER / ".installed"
    if done.is_file():
        return ONNX_EXPORTER
    if not install:
        sys.exit(f"the ONNX exporter (onnx) is not installed in {ONNX_EXPORTER}; {INSTALL_HINT}")
    shutil.rmtree(ONNX_EXPORTER, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(ONNX_EXPORTER),
                    *ONNX_PACKAGES], check=True)
    done.touch()
    return ONNX_EXPORTER


def prepare(images: int, cache: Path) -> Path:
    """Child: the photos (bench/index_throughput.py's generator) and Glance's checkpoint, each made once."""
    from bench.index_throughput import photos

    glance_model()
    return photos(images, cache)


def glance_model() -> Path:
    """The architecture with random weights in the Hub layout, written once."""
    if (GLANCE_MODEL / "open_clip_model.safetensors").is_file():
        return GLANCE_MODEL
    from models.synthetic import write_open_clip

    partial = GLANCE_MODEL.with_name(GLANCE_MODEL.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_open_clip(partial, ARCH, seed=0)
    os.replace(partial, GLANCE_MODEL)
    return GLANCE_MODEL


def rclip_models(install: bool) -> Path:
    """rclip's model files, exported once from Glance's checkpoint in a child with the exporter on its path."""
    if (RCLIP_MODELS / RCLIP_MODEL_SUBDIR / "visual.onnx").is_file():
        return RCLIP_MODELS
    exporter = onnx_exporter(install)
    partial = RCLIP_MODELS.with_name(RCLIP_MODELS.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"exporting {ARCH} to ONNX into {RCLIP_MODELS} (once) ...", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(exporter)])}
    subprocess.run([sys.executable, __file__, "--child", "export", str(partial), "--model", str(GLANCE_MODEL)],
                   env=env, check=True)
    os.replace(partial, RCLIP_MODELS)
    return RCLIP_MODELS


def export_for_rclip(out: Path, checkpoint: Path) -> None:
    """As rclip's scripts/convert_model.py: both towers, fp32, opset 18, dynamic batch, TorchScript exporter;
    the weights are Glance's checkpoint, copied into open_clip's own model (strictly, every key)."""
    import logging
    import warnings

    import open_clip
    import torch

    from models.openclip import load_state

    logging.getLogger().setLevel(logging.ERROR)  # "initialized randomly": the weights come next
    clip, _, _ = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    load_state(clip, checkpoint / "open_clip_model.safetensors")
    clip.eval()
    models = out / RCLIP_MODEL_SUBDIR
    models.mkdir(parents=True)
    for module, example, name in _towers(clip):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), str(models / name), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=18,
                              dynamo=False)
    (out / TOKENIZER_VOCAB).parent.mkdir()
    shutil.copy(Path(open_clip.__file__).parent / TOKENIZER_VOCAB.name, out / TOKENIZER_VOCAB)
    for name in RCLIP_LEGAL_FILES:  # rclip downloads these with the model; here they only need to exist
        (out / name).write_text(f"Random-weight {ARCH} exported by Glance's bench/peer_rclip.py; not a trained model.\n")


def _towers(clip) -> list:
    """(module, example input, file name) per tower, wrapped as rclip's convert_model.py wraps them."""
    import torch

    class TextTower(torch.nn.Module):  # its _TextualWrapper: encode_text as the forward the exporter traces
        def __init__(self):
            super().__init__()
            self.clip = clip

        def forward(self, tokens):
            return self.clip.encode_text(tokens)

    size = clip.visual.image_size[0]
    return [(clip.visual, torch.randn(1, 3, size, size), "visual.onnx"),
            (TextTower(), torch.zeros(1, clip.context_length, dtype=torch.long), "textual.onnx")]


# ----- one run in its own process ----------------------------------------------------------------------------
def run_child(argv: list[str], env: dict | None = None) -> dict:
    """The child's JSON result, plus its wall time and peak RSS from the kernel's accounting for it alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            sys.exit(f"{' '.join(argv[:3])} ... failed ({child.returncode}):\n{err.read().decode()[-3000:]}")
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    return {**result, "process_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def run_rclip(python: Path, models: Path, folder: Path, images: int) -> dict:
    """rclip on a fresh data folder: its model files linked in, no database yet."""
    with tempfile.TemporaryDirectory(prefix="glance-bench-rclip-") as datadir:
        for entry in models.iterdir():
            os.symlink(entry, Path(datadir) / entry.name)
        env = {**os.environ, "RCLIP_DATADIR": datadir, "HF_HUB_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)  # rclip's venv only: nothing of Glance's
        return run_child([str(python), str(REPO / "bench" / "rclip_child.py"), str(folder),
                          "--batch-size", str(RCLIP_BATCH), "--images", str(images)], env)


def glance_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def run_glance(model: Path, folder: Path, images: int, precision: str) -> dict:
    return run_child([sys.executable, __file__, "--child", "glance", str(folder), "--model", str(model),
                      "--images", str(images), "--glance-precision", precision], glance_env())


def glance_child(folder: Path, model_dir: Path, images: int, precision: str) -> None:
    """One Glance run with the CLI's defaults on this machine (unless told a precision); prints one JSON line."""
    import importlib

    import torch

    from bench.index_throughput import model_only
    from indexer.pipeline import IndexOptions, auto_batch_size, default_workers, index
    from models import load, preprocess_of, resolve, vision_shape
    from models.factory import VISION

    spec = resolve(str(model_dir), VISION)
    vision = load(spec, precision)
    batch = auto_batch_size(preprocess_of(spec), *vision_shape(spec))  # what the indexer picks for itself
    forward_before = model_only(vision, folder, batch, images)
    importlib.import_module("lancedb")  # imported before the clock starts, as rclip's modules are
    with tempfile.TemporaryDirectory(prefix="glance-bench-") as tmp:
        start = time.perf_counter()
        summary = index(IndexOptions([str(folder)], db=Path(tmp) / "db", vision_model=str(model_dir),
                                     encoders=(vision, None)))
        seconds = time.perf_counter() - start
    assert not summary.problems, summary.as_dict()
    forward = max(forward_before, model_only(vision, folder, batch, images))
    print(json.dumps({
        "seconds": seconds, "indexed": summary.added, "model_only_images_per_s": forward, "batch_size": batch,
        "decode_threads": default_workers(), "model_threads": torch.get_num_threads(),
        "precision": vision.precision.name, "runtime": f"torch {torch.__version__.split('+')[0]}",
    }))


# ----- report ------------------------------------------------------------------------------------------------
def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return {"name": name, "cores": os.cpu_count(), "amx": " amx_bf16" in info, "avx512_bf16": " avx512_bf16" in info}


def summarize(runs: list[dict], images: int) -> dict:
    for run in runs:
        assert run["indexed"] == images, f"indexed {run['indexed']} of {images} photos"
        run["end_to_end_images_per_s"] = images / run["seconds"]
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    first = runs[0]
    return {
        "end_to_end_images_per_s": round(median("end_to_end_images_per_s"), 2),
        "model_only_images_per_s": round(median("model_only_images_per_s"), 2),
        "ratio_end_to_end_to_model_only": round(median("end_to_end_images_per_s") / median("model_only_images_per_s"), 3),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
        **{k: first[k] for k in ("batch_size", "decode_threads", "model_threads", "precision", "runtime")},
        "runs": [{k: round(r[k], 2) for k in ("end_to_end_images_per_s", "model_only_images_per_s", "seconds",
                                                "process_seconds", "peak_rss_mb")} for r in runs],
    }


def report(result: dict) -> None:
    r, g, ratio = result["rclip"], result["glance"], result["glance_over_rclip"]
    c = result["cpu"]
    print(f"{result['images']} JPEGs of {result['megapixels']:.0f} MP, {ARCH} (random weights) on both; "
          f"{c['name']}, {c['cores']} cores, AMX {'yes' if c['amx'] else 'no'}; {result['rounds']} round(s), "
          f"median per tool")
    for label, t in (("rclip " + RCLIP_VERSION, r), ("Glance", g)):
        print(f"  {label:12s}: {t['runtime']}, {t['precision']}, batch {t['batch_size']}, "
              f"{t['decode_threads']} decoding thread(s), {t['model_threads']} model thread(s)")
    print(f"  {'':24s}{'rclip':>10s}{'Glance':>10s}{'Glance/rclip':>14s}")
    print(f"  {'end-to-end images/s':24s}{r['end_to_end_images_per_s']:10.2f}{g['end_to_end_images_per_s']:10.2f}"
          f"{ratio['end_to_end']:14.2f}   (target >= {result['target']})")
    print(f"  {'model-only images/s':24s}{r['model_only_images_per_s']:10.2f}{g['model_only_images_per_s']:10.2f}"
          f"{ratio['model_only']:14.2f}")
    print(f"  {'end-to-end / model-only':24s}{r['ratio_end_to_end_to_model_only']:10.3f}"
          f"{g['ratio_end_to_end_to_model_only']:10.3f}")
    print(f"  {'peak RSS MB':24s}{r['peak_rss_mb']:10d}{g['peak_rss_mb']:10d}{ratio['peak_rss']:14.2f}")
    for label, t in (("rclip", r), ("Glance", g)):
        print(f"  {label} runs (images/s): " + ", ".join(f"{x['end_to_end_images_per_s']:.2f}" for x in t["runs"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="runs per tool, alternating (default 2)")
    parser.add_argument("--install-rclip", action="store_true",
                        help=f"create rclip {RCLIP_VERSION}'s venv and the ONNX exporter in {BENCH_CACHE} if missing")
    parser.add_argument("--rclip-python", default=default_rclip_python(), help="a Python >= 3.12 for rclip's venv")
    parser.add_argument("--cache", type=Path, default=PHOTOS, help="where the generated JPEGs are kept")
    parser.add_argument("--glance-precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="fp32: Glance as it runs on a CPU without bf16 units (fp32 matmuls do not use AMX)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=("prepare", "glance", "export"), help=argparse.SUPPRESS)
    parser.add_argument("target", nargs="?", type=Path, help=argparse.SUPPRESS)  # a child's folder
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images < 1 or args.rounds < 1:
        parser.error("--images and --rounds must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.child == "export":
        return export_for_rclip(args.target, args.model)
    if args.child == "glance":
        return glance_child(args.target, args.model, args.images, args.glance_precision)
    if args.child == "prepare":
        return print(prepare(args.images, args.cache))
    python = rclip_python(args.install_rclip, args.rclip_python)
    folder = Path(subprocess.run([sys.executable, __file__, "--child", "prepare", "--images", str(args.images),
                                  "--cache", str(args.cache)], env=glance_env(), check=True, cwd=REPO,
                                 stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1])
    model, models = GLANCE_MODEL, rclip_models(args.install_rclip)
    runs = {"rclip": [], "glance": []}
    for round_ in range(args.rounds):
        for tool, run in (("rclip", lambda: run_rclip(python, models, folder, args.images)),
                          ("glance", lambda: run_glance(model, folder, args.images, args.glance_precision))):
            print(f"round {round_ + 1}/{args.rounds}: {tool} ...", file=sys.stderr, flush=True)
            runs[tool].append(run())
    rclip, glance = summarize(runs["rclip"], args.images), summarize(runs["glance"], args.images)
    machine = cpu()
    result = {
        "images": args.images, "megapixels": SIZE[0] * SIZE[1] / 1e6, "architecture": ARCH, "rounds": args.rounds,
        "cpu": machine, "target": 2.0 if machine["amx"] and glance["precision"] == "bf16" else 1.3,
        "rclip": rclip, "glance": glance,
        "glance_over_rclip": {
            "end_to_end": round(glance["end_to_end_images_per_s"] / rclip["end_to_end_images_per_s"], 2),
            "model_only": round(glance["model_only_images_per_s"] / rclip["model_only_images_per_s"], 2),
            "peak_rss": round(glance["peak_rss_mb"] / rclip["peak_rss_mb"], 2)},
    }
    result["meets_target"] = result["glance_over_rclip"]["end_to_end"] >= result["target"]
    if args.json:
        print(json.dumps(result))
    else:
        report(result)


if __name__ == "__main__":
    main()

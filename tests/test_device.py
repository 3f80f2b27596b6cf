"""`--device auto|cpu|cuda`: where the vision model runs. The CUDA tests run where torch sees a GPU, and skip with
that reason elsewhere; the CPU-side behaviour (auto falls back, cuda is refused in one line) runs everywhere."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from indexer import pipeline
from indexer.pipeline import IndexOptions, index
from models.device import DeviceUnavailable, resolve_device
from store import IMAGES, Store
from tests.conftest import FIXTURE
from tests.test_indexer_cli import assert_one_line_error, main

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="torch sees no CUDA GPU on this machine")
needs_no_gpu = pytest.mark.skipif(GPU, reason="this machine has a CUDA GPU: auto picks it")
IMAGES_DIR = FIXTURE / "images"


def test_cpu_is_always_there_and_bad_names_are_refused():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceUnavailable, match="--device must be one of auto, cpu, cuda"):
        resolve_device("tpu")


@needs_no_gpu
def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_refused_in_one_line(tmp_path, tiny_model_dirs, capsys):
    assert resolve_device("auto").type == "cpu"
    assert models.VisionEncoder(str(tiny_model_dirs[0]), "fp32", "auto").device.type == "cpu"
    vision, text = tiny_model_dirs
    result = main(IMAGES_DIR, "--db", tmp_path / "db", "--vision-model", vision, "--text-model", text,
                  "--device", "cuda", capsys=capsys)
    assert_one_line_error(result, "--device cuda: torch sees no CUDA GPU")
    assert not (tmp_path / "db").exists() or not Store(tmp_path / "db").count_photos()  # refused before any work


def test_batches_on_a_gpu_are_sized_to_its_memory_and_capped_higher(monkeypatch, tiny_model_dirs):
    from models.preprocess import Preprocess

    pre = Preprocess.from_folder(tiny_model_dirs[0])
    monkeypatch.setattr(pipeline, "available_memory", lambda device=None: 80 << 30)
    gpu = torch.device("cuda", 0)  # only its type is read: sizing needs no card
    assert pipeline.auto_batch_size(pre, 768, 12, device=gpu) == pipeline.MAX_GPU_BATCH > \
        pipeline.auto_batch_size(pre, 768, 12)
    monkeypatch.setattr(pipeline, "available_memory", lambda device=None: 1 << 30)
    assert 1 <= pipeline.auto_batch_size(pre, 768, 12, device=gpu) < pipeline.MAX_GPU_BATCH


@needs_gpu
@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_the_vision_model_on_a_gpu_matches_the_cpu_within_the_cosine_bound(tiny_model_dirs, tiny_encoders, precision):
    from PIL import Image

    gpu = models.VisionEncoder(str(tiny_model_dirs[0]), precision, "cuda")
    assert gpu.device.type == "cuda" and gpu.precision.cosine_to_fp32 >= 0.999
    images = [Image.open(p) for p in sorted(IMAGES_DIR.iterdir())]
    on_gpu, on_cpu = gpu.embed_images(images), tiny_encoders[0].embed_images(images)
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.float32
    assert (on_gpu * on_cpu).sum(-1).min() >= 0.999


@needs_gpu
def test_indexing_on_a_gpu_stores_the_vectors_the_cpu_would(tmp_path, tiny_model_dirs):
    vision, text = map(str, tiny_model_dirs)
    vectors = {}
    for device in ("cpu", "cuda"):
        summary = index(IndexOptions([str(IMAGES_DIR)], db=tmp_path / device, vision_model=vision, text_model=text,
                                     precision="fp32", device=device))
        assert summary.added and not summary.problems
        rows = Store(tmp_path / device).table(IMAGES).to_arrow().sort_by("relpath").to_pylist()
        vectors[device] = np.array([r["vector"] for r in rows])
    assert (vectors["cpu"] * vectors["cuda"]).sum(-1).min() >= 0.999

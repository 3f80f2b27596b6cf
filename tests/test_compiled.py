"""The vision tower through torch.compile (models/compiled.py): the same vectors as the eager tower for any batch
size, kept only within cosine 0.999 of fp32, and the eager tower wherever it cannot compile."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import VisionEncoder
from models.compiled import BiasAfterMatmul, compile_tower

BATCH = 4
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def towers(tiny_model_dirs):
    """(eager, compiled) tiny Nomic towers in the precision `auto` chose; the compile happens once here."""
    vision = str(tiny_model_dirs[0])
    eager, compiled = VisionEncoder(vision, "auto"), VisionEncoder(vision, "auto")
    assert compiled.compile(BATCH)
    return eager, compiled


def test_the_bias_pass_turns_each_addmm_into_a_matmul_and_an_add():
    from torch.fx.experimental.proxy_tensor import make_fx

    torch.manual_seed(0)
    rows, weight, bias = torch.randn(5, 8), torch.randn(8, 3), torch.randn(3)
    scaled = make_fx(lambda x, w, b: (torch.addmm(b, x, w), torch.addmm(b, x, w, beta=0.5)))(rows, weight, bias)
    BiasAfterMatmul()(scaled.graph)
    scaled.recompile()
    targets = [node.target for node in scaled.graph.nodes if node.op == "call_function"]
    aten = torch.ops.aten
    assert targets.count(aten.mm.default) == 1 and targets.count(aten.add.Tensor) == 1
    assert targets.count(aten.addmm.default) == 1  # the one with beta 0.5 is not a plain bias: left as it is
    plain, half = scaled(rows, weight, bias)
    assert torch.allclose(plain, rows @ weight + bias, atol=1e-6)
    assert torch.allclose(half, rows @ weight + 0.5 * bias, atol=1e-6)


@pytest.mark.parametrize("count", [1, BATCH - 1, BATCH, 2 * BATCH + 1])
def test_any_batch_size_gives_the_eager_towers_vectors(towers, count):
    eager, compiled = towers
    pixels = torch.rand(count, 3, *eager.preprocess.input_size) * 2 - 1
    want, got = eager.embed_pixels(pixels), compiled.embed_pixels(pixels)
    assert got.shape == want.shape == (count, eager.dim) and got.dtype == torch.float32
    assert F.cosine_similarity(got, want).min().item() >= 0.999
    assert np.allclose(got.norm(dim=1).numpy(), 1.0, atol=1e-4)


def test_compiling_twice_keeps_the_first(towers):
    _, compiled = towers
    first = compiled._compiled
    assert compiled.compile(BATCH) and compiled._compiled is first


def test_a_compiled_tower_that_strays_from_fp32_is_not_kept(towers, caplog):
    eager, _ = towers
    probe = eager._probe

    def pointing_the_other_way() -> torch.Tensor:
        with torch.inference_mode():
            return -eager.model.embed(probe)

    with caplog.at_level(logging.WARNING, logger="glance.models"):
        kept = compile_tower(eager.model.embed, BATCH, probe, pointing_the_other_way,
                             {"test": "a reference pointing the other way"}, 0.999)
    assert kept is None and "strays from fp32" in caplog.text


def test_without_a_cpp_compiler_the_eager_tower_goes_on(tiny_model_dirs, tmp_path):
    """In a fresh process: inductor reads $CXX when it is imported."""
    script = ("import logging, sys, torch\n"
              "from models import VisionEncoder\n"
              "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
              "vision = VisionEncoder(sys.argv[1], 'auto')\n"
              "compiled = vision.compile(4)\n"
              "print(compiled, tuple(vision.embed_pixels(torch.rand(2, 3, *vision.preprocess.input_size)).shape))\n")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "PYTHONPATH": str(REPO),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # nothing compiled before to fall back on
    done = subprocess.run([sys.executable, "-c", script, str(tiny_model_dirs[0])], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    vision_dim = VisionEncoder(str(tiny_model_dirs[0]), "fp32").dim
    assert done.stdout.split("\n")[0] == f"False (2, {vision_dim})"
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("torch.compile is not available here"), done.stderr


def test_indexing_with_compile_on_stores_the_vectors_of_an_eager_run(towers, tmp_path, tiny_model_dirs):
    from indexer.pipeline import IndexOptions, index
    from store import IMAGES, Store
    from tests.conftest import FIXTURE

    vision, text = map(str, tiny_model_dirs)
    vectors, preloaded = {}, VisionEncoder(vision, "auto")  # as the indexer loads it
    for compile_, encoders in (("off", None), ("on", (preloaded, None))):
        summary = index(IndexOptions([str(FIXTURE / "images")], db=tmp_path / compile_, vision_model=vision,
                                     text_model=text, batch_size=BATCH, compile=compile_, encoders=encoders))
        assert summary.added == len(list((FIXTURE / "images").iterdir())) and not summary.problems
        rows = Store(tmp_path / compile_).table(IMAGES).to_arrow().sort_by("relpath").to_pylist()
        vectors[compile_] = np.array([r["vector"] for r in rows])
    assert preloaded._compiled is not None  # the run compiled it
    assert (vectors["off"] * vectors["on"]).sum(-1).min() >= 0.999


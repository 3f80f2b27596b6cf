"""The encoders against Nomic's reference outputs (tests/fixtures/nomic-tiny), and their loading rules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

import models
from models.encoders import (MIN_COSINE_TO_FP32, Precision, choose_precision, cpu_has_bf16, cpu_has_int8,
                             hold_linear_weights_int8)
from models.synthetic import write_pair, write_text, write_vision
from models.text import TextEncoder, with_prefix
from models.vision import NomicVisionModel, official_keys
from models.weights import load_strict

from .conftest import FIXTURE, REPO


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURE / "expected.npz")


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURE / "manifest.json").read_text())


def test_token_ids_match_reference(tiny_encoders, expected, manifest):
    _, text = tiny_encoders
    tokens = text.encoder.tokenize(manifest["texts"])
    assert np.array_equal(tokens["input_ids"].numpy(), expected["input_ids"])
    assert np.array_equal(tokens["attention_mask"].numpy(), expected["attention_mask"])


@pytest.mark.parametrize("dim", [128, 64])
def test_text_embeddings_match_reference(tiny_encoders, expected, manifest, dim):
    _, text = tiny_encoders
    ours = text.embed(manifest["texts"], dim).numpy()
    assert ours.shape == expected[f"text_embeddings_{dim}"].shape
    assert np.abs(ours - expected[f"text_embeddings_{dim}"]).max() <= 1e-4


def test_image_embeddings_from_pixel_values_match_reference(tiny_encoders, expected):
    vision, _ = tiny_encoders
    ours = vision.embed_pixels(torch.from_numpy(expected["pixel_values"])).numpy()
    assert np.abs(ours - expected["image_embeddings"]).max() <= 1e-4


def test_image_files_through_whole_path_match_reference(tiny_encoders, expected, manifest):
    """Decode, EXIF transpose, RGB (CMYK, RGBA, palette, grey), resize and normalize, per image."""
    vision, _ = tiny_encoders
    images = [Image.open(FIXTURE / "images" / name) for name in manifest["images"]]
    ours = vision.embed_images(images).numpy()
    cosines = (ours * expected["image_embeddings"]).sum(axis=1)
    for name, cosine in zip(manifest["images"], cosines):
        assert cosine >= 0.999, f"{name}: cosine {cosine:.5f}"
    assert {"exif_rotated.jpg", "cmyk.jpg", "transparent.png", "palette.gif", "tiny.png"} <= set(manifest["images"])


def test_preprocessing_matches_clip_image_processor_pixels(tiny_encoders, expected, manifest):
    vision, _ = tiny_encoders
    pixels = vision.preprocess([Image.open(FIXTURE / "images" / n) for n in manifest["images"]])
    assert pixels.shape == expected["pixel_values"].shape
    # PIL's bicubic is the same kernel CLIPImageProcessor uses; a few resampled pixels differ by rounding
    assert np.abs(pixels.numpy() - expected["pixel_values"]).mean() < 1e-3


def test_exif_rotation_is_applied(tiny_encoders):
    vision, _ = tiny_encoders
    rotated = Image.open(FIXTURE / "images" / "exif_rotated.jpg")
    stored_w, stored_h = rotated.size
    assert vision.preprocess.resize(rotated).size == (224, 224)
    from models.preprocess import to_rgb

    assert to_rgb(rotated).size == (stored_h, stored_w)  # orientation 6: stored sideways


def test_outputs_are_unit_vectors_at_every_matryoshka_dim(tiny_encoders):
    vision, text = tiny_encoders
    for dim in (128, 64):
        vectors = text.embed_queries(["a red bicycle", "receipts"], dim)
        assert vectors.shape == (2, dim)
        assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    images = vision.embed_images([Image.new("RGB", (300, 200), "red")], dim=64)
    assert torch.allclose(images.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_text_is_batched_by_length_without_changing_results(tiny_encoders):
    _, text = tiny_encoders
    texts = ["short", "a much longer query about dogs running along a sandy beach at sunset", "mid length text"]
    together = text.embed_queries(texts)
    alone = torch.cat([text.embed_queries([t]) for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)


def test_prefixes():
    assert with_prefix("a dog") == "search_query: a dog"
    for prefix in models.TASK_PREFIXES:
        assert with_prefix(prefix + "x") == prefix + "x"


def test_v1_text_is_plain_l2_without_layer_norm(tmp_path):
    vision_dir, text_dir = write_pair(tmp_path, version="v1", template=FIXTURE)
    text = models.TextEmbedder(str(text_dir), precision="fp32")
    assert text.version == "v1"
    tokens = text.encoder.tokenize(["search_query: hello"])
    with torch.inference_mode():
        hidden = text.encoder.model(tokens["input_ids"], tokens["attention_mask"])
    mean = hidden.mean(dim=1)  # one sequence, no padding
    assert torch.allclose(text.embed(["search_query: hello"]), torch.nn.functional.normalize(mean, dim=-1), atol=1e-5)
    with pytest.raises(models.UnsupportedDim, match="Matryoshka"):
        text.embed(["x"], 64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_generated_checkpoints_load_from_any_stored_dtype(tmp_path, dtype):
    vision_dir, text_dir = write_pair(tmp_path, seed=3, dtype=dtype, template=FIXTURE)
    vision, text = models.load_pair(str(vision_dir), str(text_dir), precision="fp32")
    assert vision.model.embeddings.proj.weight.dtype == torch.float32
    stored = safetensors.torch.load_file(str(vision_dir / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {dtype}
    assert text.embed_queries(["x"]).shape == (1, 128)


def test_generated_checkpoint_has_the_official_key_layout(tmp_path):
    write_vision(tmp_path / "v", size="tiny", template=FIXTURE)
    write_text(tmp_path / "t", size="tiny", template=FIXTURE)
    reference_vision = safetensors.torch.load_file(str(FIXTURE / "vision-v1.5" / "model.safetensors"))
    reference_text = safetensors.torch.load_file(str(FIXTURE / "text-v1.5" / "model.safetensors"))
    ours_vision = safetensors.torch.load_file(str(tmp_path / "v" / "model.safetensors"))
    ours_text = safetensors.torch.load_file(str(tmp_path / "t" / "model.safetensors"))
    assert {k: v.shape for k, v in ours_vision.items()} == {k: v.shape for k, v in reference_vision.items()}
    assert {k: v.shape for k, v in ours_text.items()} == {k: v.shape for k, v in reference_text.items()}


def test_strict_key_check_names_missing_and_unexpected_keys(tmp_path, tiny_model_dirs):
    state = safetensors.torch.load_file(str(tiny_model_dirs[0] / "model.safetensors"))
    del state["layers.1.mlp.fc12.bias"]
    state["layers.0.attn.rotary.weight"] = torch.zeros(2)
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(state, str(path))
    model = NomicVisionModel(models.VisionEncoder(str(tiny_model_dirs[0]), "fp32").config)
    with pytest.raises(models.CheckpointMismatch) as err:
        load_strict(model, path, torch.float32, key_map=official_keys)
    assert "missing: layers.1.mlp.fc12.bias" in str(err.value)
    assert "unexpected: layers.0.attn.rotary.weight" in str(err.value)


def test_wrong_shape_is_named(tmp_path, tiny_model_dirs):
    state = safetensors.torch.load_file(str(tiny_model_dirs[0] / "model.safetensors"))
    state["embeddings.pos_embed"] = torch.zeros(1, 10, 128)
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(state, str(path))
    model = NomicVisionModel(models.VisionEncoder(str(tiny_model_dirs[0]), "fp32").config)
    with pytest.raises(models.CheckpointMismatch, match="wrong shape: embeddings.pos_embed"):
        load_strict(model, path, torch.float32, key_map=official_keys)


def test_mismatched_pair_is_refused(tmp_path, tiny_model_dirs):
    old_vision, _ = write_pair(tmp_path, version="v1", template=FIXTURE)
    with pytest.raises(models.MismatchedModels, match="v1 .*v1.5|v1.5 .*v1"):
        models.load_pair(str(old_vision), str(tiny_model_dirs[1]))


def _run_embed(*args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "indexer", "embed", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_offline_without_cache_gives_one_clear_message(tmp_path):
    result = _run_embed("--text", "hello", env_extra={"HF_HOME": str(tmp_path / "empty-hf-home")})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    message = lines[0]
    assert "nomic-ai/nomic-embed-" in message and "model.safetensors" in message and "config.json" in message
    assert "HF_HUB_OFFLINE" in message and "/path/to/folder" in message


def fill_hub_cache(hf_home: Path, tiny_model_dirs) -> None:
    """The standard Hub cache layout, as a first run with network leaves it, holding the tiny v1.5 pair."""
    for repo, folder in (("nomic-embed-vision-v1.5", tiny_model_dirs[0]), ("nomic-embed-text-v1.5", tiny_model_dirs[1])):
        repo_dir = hf_home / "hub" / f"models--nomic-ai--{repo}"
        snapshot = repo_dir / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
        snapshot.mkdir(parents=True)
        for file in folder.iterdir():
            (snapshot / file.name).write_bytes(file.read_bytes())
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text(snapshot.name)


def test_models_cached_in_hf_home_load_offline(tmp_path, tiny_model_dirs):
    """A first run with network fills the standard cache; later runs find it there offline."""
    fill_hub_cache(tmp_path / "hf", tiny_model_dirs)
    result = _run_embed("--text", "hello", "--dim", "64", env_extra={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["dim"] == 64 and len(row["vector"]) == 64


def test_embed_cli_prints_json_lines_in_input_order(tiny_model_dirs, tiny_encoders):
    vision_dir, text_dir = tiny_model_dirs
    image = FIXTURE / "images" / "landscape.jpg"
    result = _run_embed("--vision-model", str(vision_dir), "--text-model", str(text_dir), "--precision", "fp32",
                        "--text", "a dog", "--image", str(image), "--text", "search_document: report")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["kind"], r["input"]) for r in rows] == [("text", "a dog"), ("image", str(image)),
                                                         ("text", "search_document: report")]
    vision, text = tiny_encoders
    assert np.allclose(rows[0]["vector"], text.embed(["search_query: a dog"])[0].numpy(), atol=1e-5)
    assert np.allclose(rows[2]["vector"], text.embed(["search_document: report"])[0].numpy(), atol=1e-5)
    assert np.allclose(rows[1]["vector"], vision.embed_images([Image.open(image)])[0].numpy(), atol=1e-5)
    assert all(r["dim"] == 128 for r in rows)


def test_embed_cli_bad_input_is_one_line(tiny_model_dirs, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    vision_dir, text_dir = tiny_model_dirs
    for args in (["--image", str(not_image)], ["--image", str(tmp_path / "missing.png")], [],
                 ["--text", "x", "--dim", "100"]):
        result = _run_embed("--vision-model", str(vision_dir), "--text-model", str(text_dir), *args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_fast_path_holds_the_cosine_bound(tiny_model_dirs, expected, tiny_encoders):
    vision_fp32, text_fp32 = tiny_encoders
    vision_bf16, text_bf16 = models.load_pair(*map(str, tiny_model_dirs), precision="bf16")
    assert vision_bf16.precision.dtype == torch.bfloat16 and text_bf16.precision.dtype == torch.bfloat16
    images = [Image.open(p) for p in sorted((FIXTURE / "images").iterdir())]
    cos_images = (vision_bf16.embed_images(images) * vision_fp32.embed_images(images)).sum(-1)
    texts = ["a dog on the beach", "red bicycle", "receipts from 2019", "mountains"]
    cos_texts = (text_bf16.embed_queries(texts) * text_fp32.embed_queries(texts)).sum(-1)
    assert cos_images.min() >= MIN_COSINE_TO_FP32 and cos_texts.min() >= MIN_COSINE_TO_FP32


def test_auto_precision_falls_back_to_fp32_when_bf16_drifts():
    def drifting_probe(precision):
        return torch.eye(4) if precision.dtype == torch.float32 else torch.eye(4).roll(1, 0)

    def faithful_probe(precision):
        return torch.eye(4)

    assert choose_precision("auto", drifting_probe, native_bf16=True) == Precision(torch.float32, 1.0)
    assert choose_precision("bf16", drifting_probe, native_bf16=True).dtype == torch.bfloat16  # asked for
    assert choose_precision("auto", faithful_probe, native_bf16=True) == Precision(torch.bfloat16, 1.0)
    assert choose_precision("auto", faithful_probe, native_bf16=False).dtype == torch.float32


def test_held_bf16_weights_are_tried_first_and_dropped_when_they_drift():
    state = {"held": False, "restored": 0}

    def hold():
        state["held"] = True

        def restore():
            state["held"], state["restored"] = False, state["restored"] + 1
        return restore

    def probe_drifting_when_held(precision):
        assert precision.bf16_weights == state["held"]  # the probe runs on the weights it is told about
        return torch.eye(4).roll(1, 0) if precision.bf16_weights else torch.eye(4)

    chosen = choose_precision("auto", probe_drifting_when_held, native_bf16=True, hold_bf16=hold)
    assert chosen.path == "bf16-autocast" and not state["held"] and state["restored"] == 1
    chosen = choose_precision("auto", lambda p: torch.eye(4), native_bf16=True, hold_bf16=hold)
    assert chosen == Precision(torch.bfloat16, 1.0, bf16_weights=True) and chosen.path == "bf16-weights"
    assert state["held"] and state["restored"] == 1  # kept: nothing put back
    state["held"] = False
    assert choose_precision("auto", lambda p: torch.eye(4), native_bf16=False, hold_bf16=hold).path == "fp32"
    assert choose_precision("fp32", lambda p: torch.eye(4), native_bf16=True, hold_bf16=hold).path == "fp32"
    assert not state["held"]  # fp32 never touches the weights


TEXTS = ["a dog on the beach", "red bicycle", "receipts from 2019", "mountains", "search_document: a long report "
         "on the quarterly figures of the company, with tables"]


def test_fp32_text_is_the_plain_fp32_model(tiny_model_dirs):
    text_dir = tiny_model_dirs[1]
    text = models.TextEmbedder(str(text_dir), precision="fp32")
    assert text.precision.path == "fp32" and not text.precision.bf16_weights
    assert {p.dtype for p in text.encoder.model.parameters()} == {torch.float32}
    plain = TextEncoder(text_dir, "v1.5", torch.float32)
    assert torch.equal(text.embed(TEXTS), plain.embed(TEXTS))  # bit for bit: no cast, no autocast


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_bf16_text_holds_bf16_weights_within_the_cosine_bound(tiny_model_dirs, tiny_encoders):
    text = models.TextEmbedder(str(tiny_model_dirs[1]), precision="bf16")
    assert text.precision.path == "bf16-weights" and text.precision.cosine_to_fp32 >= MIN_COSINE_TO_FP32
    module = text.encoder.model
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert module.embeddings.word_embeddings.weight.dtype == torch.float32  # embeddings and LayerNorms stay fp32
    assert all(m.weight.dtype == torch.float32 for m in module.modules() if isinstance(m, torch.nn.LayerNorm))
    exact = tiny_encoders[1]
    cosine = (text.embed_queries(TEXTS) * exact.embed_queries(TEXTS)).sum(-1)
    assert cosine.min() >= MIN_COSINE_TO_FP32 and text.embed_queries(TEXTS).dtype == torch.float32


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX): auto stays fp32")
def test_auto_vision_holds_the_whole_tower_in_bf16_within_the_cosine_bound(tiny_model_dirs, tiny_encoders):
    vision = models.VisionEncoder(str(tiny_model_dirs[0]), precision="auto")
    assert vision.precision.path == "bf16-weights" and vision.precision.cosine_to_fp32 >= MIN_COSINE_TO_FP32
    assert {p.dtype for p in vision.model.parameters()} == {torch.bfloat16}  # LayerNorms and embeddings too
    assert vision.model.rope_cos.dtype == torch.bfloat16
    images = [Image.open(p) for p in sorted((FIXTURE / "images").iterdir())]
    held, exact = vision.embed_images(images), tiny_encoders[0].embed_images(images)
    assert held.dtype == torch.float32 and (held * exact).sum(-1).min() >= MIN_COSINE_TO_FP32


def test_held_vision_weights_are_put_back_exactly(tiny_model_dirs, tiny_encoders):
    from models.encoders import hold_weights_bf16

    vision = models.VisionEncoder(str(tiny_model_dirs[0]), precision="fp32")
    before = {k: v.clone() for k, v in vision.model.state_dict().items()}
    restore = hold_weights_bf16(vision.model)
    assert {p.dtype for p in vision.model.parameters()} == {torch.bfloat16}
    restore()
    after = vision.model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == torch.float32 for k in before)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX): auto stays fp32")
def test_lora_loads_into_held_bf16_weights(tiny_model_dirs):
    from models.lora import adapters_enabled, add_lora, load_lora, lora_state

    exact = models.TextEmbedder(str(tiny_model_dirs[1]), precision="fp32")
    add_lora(exact)
    gen = torch.Generator().manual_seed(0)
    for name, parameter in exact.encoder.model.named_parameters():
        if "lora_B" in name:  # as if trained: fresh adapters are zero and change nothing
            parameter.data = torch.randn(parameter.shape, generator=gen) * 0.05
    held = models.TextEmbedder(str(tiny_model_dirs[1]), precision="bf16")
    assert held.precision.path == "bf16-weights"
    load_lora(held, lora_state(exact))
    tuned = (held.embed_queries(TEXTS) * exact.embed_queries(TEXTS)).sum(-1)
    assert tuned.min() >= MIN_COSINE_TO_FP32
    with adapters_enabled(held, False):  # one at a time: the switch is one lock for every model
        base_held = held.embed_queries(TEXTS)
    with adapters_enabled(exact, False):
        base_exact = exact.embed_queries(TEXTS)
    assert (base_held * base_exact).sum(-1).min() >= MIN_COSINE_TO_FP32
    assert not torch.allclose(base_held, held.embed_queries(TEXTS), atol=1e-3)  # the adapters do act


def test_int8_is_tried_first_and_dropped_when_it_drifts():
    state = {"int8": False, "bf16": False}

    def holder(kind):
        def hold():
            state[kind] = True

            def restore():
                state[kind] = False
            return restore
        return hold

    def probe_drifting_in_int8(precision):
        assert precision.int8_weights == state["int8"] and precision.bf16_weights == state["bf16"]
        return torch.eye(4).roll(1, 0) if precision.int8_weights else torch.eye(4)

    hold = {"hold_bf16": holder("bf16"), "hold_int8": holder("int8")}
    chosen = choose_precision("auto", lambda p: torch.eye(4), native_bf16=True, native_int8=True, **hold)
    assert chosen.path == "int8-dynamic" and chosen.name == "int8" and state == {"int8": True, "bf16": False}
    state["int8"] = False
    chosen = choose_precision("auto", probe_drifting_in_int8, native_bf16=True, native_int8=True, **hold)
    assert chosen.path == "bf16-weights" and state == {"int8": False, "bf16": True}  # int8 put back, bf16 kept
    state["bf16"] = False
    chosen = choose_precision("auto", probe_drifting_in_int8, native_bf16=False, native_int8=True, **hold)
    assert chosen.path == "fp32" and state == {"int8": False, "bf16": False}
    chosen = choose_precision("auto", lambda p: torch.eye(4), native_bf16=False, native_int8=True, **hold)
    assert chosen.path == "int8-dynamic"  # int8 needs no bf16 units
    state["int8"] = False
    for requested, native_int8 in (("bf16", True), ("fp32", True), ("auto", False)):
        chosen = choose_precision(requested, lambda p: torch.eye(4), native_bf16=True, native_int8=native_int8, **hold)
        assert not chosen.int8_weights and not state["int8"], (requested, native_int8)
        state["bf16"] = False


def test_int8_slower_than_fp32_is_put_back():
    """A CPU whose oneDNN lacks int8 kernels runs them as a reference loop, ~1000x slower: auto moves on."""
    state = {"int8": False}

    def hold_int8():
        state["int8"] = True
        return lambda: state.update(int8=False)

    def probe(precision):
        assert precision.int8_weights == state["int8"]
        if precision.int8_weights:
            time.sleep(0.3)  # the fp32 probe returns at once
        return torch.eye(4)

    chosen = choose_precision("auto", probe, native_bf16=True, native_int8=True, hold_int8=hold_int8)
    assert chosen.path == "bf16-autocast" and not state["int8"]
    chosen = choose_precision("auto", lambda p: torch.eye(4), native_bf16=True, native_int8=True, hold_int8=hold_int8)
    assert chosen.path == "int8-dynamic" and state["int8"]  # as fast: kept


def int8_text(folder) -> models.TextEmbedder:
    """The text model on the int8 path whatever this CPU's speed in it (auto keeps int8 only where it is fast)."""
    text = models.TextEmbedder(str(folder), precision="fp32")
    hold_linear_weights_int8(text.encoder.model)
    text.precision = Precision(torch.float32, int8_weights=True)
    return text


def test_int8_that_cannot_be_held_falls_back():
    def no_kernels():
        raise RuntimeError("no oneDNN int8 kernels in this build")

    chosen = choose_precision("auto", lambda p: torch.eye(4), native_bf16=True, native_int8=True, hold_int8=no_kernels)
    assert chosen.path == "bf16-autocast"


@pytest.mark.skipif(not cpu_has_int8(), reason="this CPU has no int8 dot-product units (VNNI/AMX): auto skips int8")
def test_text_in_int8_holds_int8_weights_within_the_cosine_bound(tiny_model_dirs, tiny_encoders):
    auto = models.TextEmbedder(str(tiny_model_dirs[1]), precision="auto")
    assert auto.precision.cosine_to_fp32 >= MIN_COSINE_TO_FP32 and auto.precision.path in ("int8-dynamic",
                                                                                          "bf16-weights")
    text = int8_text(tiny_model_dirs[1])
    module = text.encoder.model
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.int8 for m in linears)
    assert module.embeddings.word_embeddings.weight.dtype == torch.float32  # embeddings and LayerNorms stay fp32
    exact = tiny_encoders[1]
    many = TEXTS + [f"photo number {i} of the trip" for i in range(20)]  # beyond the probe's two texts
    cosine = (text.embed_queries(many) * exact.embed_queries(many)).sum(-1)
    assert cosine.min() >= MIN_COSINE_TO_FP32 and text.embed_queries(TEXTS).dtype == torch.float32
    assert not torch.equal(text.embed_queries(TEXTS), exact.embed_queries(TEXTS))  # really another path


@pytest.mark.skipif(not cpu_has_int8(), reason="this CPU has no int8 dot-product units (VNNI/AMX): auto skips int8")
def test_lora_loads_into_held_int8_weights(tiny_model_dirs):
    from models.lora import add_lora, load_lora, lora_state

    exact = models.TextEmbedder(str(tiny_model_dirs[1]), precision="fp32")
    add_lora(exact)
    gen = torch.Generator().manual_seed(1)
    for name, parameter in exact.encoder.model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=gen) * 0.05
    held = int8_text(tiny_model_dirs[1])
    load_lora(held, lora_state(exact))
    assert (held.embed_queries(TEXTS) * exact.embed_queries(TEXTS)).sum(-1).min() >= MIN_COSINE_TO_FP32


def test_model_specs_that_are_neither_folder_nor_repo_id_are_refused():
    with pytest.raises(models.ModelUnavailable, match="no model folder"):
        models.VisionEncoder("./no/such/folder")


def test_unreachable_hub_gives_the_same_one_line_message(tmp_path):
    """No offline flag, but the Hub cannot be reached (a closed port on loopback stands in for no network)."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env_without_offline = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    result = subprocess.run([sys.executable, "-m", "indexer", "embed", "--text", "hello"], cwd=REPO,
                            env={**env_without_offline, **env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot be reached" in result.stderr and "--vision-model /path/to/folder" in result.stderr


def test_large_photos_take_the_fast_resize_without_moving_the_embedding(tiny_encoders):
    """12-MP photos are box-reduced before the bicubic pass; the vector stays where exact resampling puts it."""
    vision, _ = tiny_encoders
    rng = np.random.default_rng(1)
    h, w = 3024, 4032
    gradient = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.array([1.0, 0.6, 0.3])
    texture = np.asarray(Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((w, h)))
    photo = Image.fromarray((0.7 * gradient + 0.3 * texture).clip(0, 255).astype(np.uint8))
    exact = photo.resize((224, 224), Image.BICUBIC)
    fast = vision.preprocess.resize(photo)
    assert np.abs(np.asarray(fast, np.float32) - np.asarray(exact, np.float32)).mean() < 2.0
    cosine = (vision.embed_pixels(vision.preprocess.to_tensor([fast]))
              * vision.embed_pixels(vision.preprocess.to_tensor([exact]))).sum()
    assert cosine >= 0.999


def test_embed_cli_is_exact_fp32_by_default(tiny_model_dirs, expected, manifest):
    """The debugging tool must reproduce the reference without extra flags."""
    result = _run_embed("--vision-model", str(tiny_model_dirs[0]), "--text-model", str(tiny_model_dirs[1]),
                        "--dim", "64", "--text", manifest["texts"][0])
    assert result.returncode == 0, result.stderr
    vector = np.array(json.loads(result.stdout)["vector"])
    assert np.abs(vector - expected["text_embeddings_64"][0]).max() <= 1e-4


# ------------------------------------------------------------------------------------------ the factory

def test_one_factory_resolves_presets_hub_ids_and_folders(tiny_model_dirs, monkeypatch):
    vision_dir, text_dir = tiny_model_dirs
    monkeypatch.chdir(vision_dir.parent)
    vision, text = models.resolve_pair(f"./{vision_dir.name}", f"./{text_dir.name}")  # folders, as typed
    assert (vision.spec, text.spec) == (str(vision_dir.resolve()), str(text_dir.resolve()))  # recorded absolute
    assert (vision.kind, vision.version, vision.dim, text.dim) == ("vision", "v1.5", 128, 128)
    for spec, repo, needs in (("nomic-v1.5", "nomic-ai/nomic-embed-vision-v1.5", "preprocessor_config.json"),
                              ("nomic-v1", "nomic-ai/nomic-embed-vision-v1", "preprocessor_config.json"),
                              ("nomic-ai/nomic-embed-vision-v1.5", "nomic-ai/nomic-embed-vision-v1.5", "config.json"),
                              ("clip-vit-b-32", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors"),
                              ("siglip-vit-b-16", "timm/ViT-B-16-SigLIP", "open_clip_config.json")):
        with pytest.raises(models.ModelUnavailable, match=f"model {repo} is not in the Hugging Face cache.*{needs}"):
            models.resolve_pair(spec)  # a preset names both models; offline and uncached, the first is named


def test_the_factory_refuses_pairs_that_do_not_share_a_space(tiny_model_dirs, tmp_path):
    vision_dir, text_dir = tiny_model_dirs
    old_vision, _ = write_pair(tmp_path / "v1", version="v1", template=FIXTURE)
    with pytest.raises(models.MismatchedModels, match="v1 but text model .* is v1.5"):
        models.resolve_pair(str(old_vision), str(text_dir))
    wide = write_text(tmp_path / "wide" / "nomic-embed-text-v1.5", template=FIXTURE)
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "n_embd": 256}))
    with pytest.raises(models.MismatchedModels, match="128 dimensions but text model .* into 256"):
        models.resolve_pair(str(vision_dir), str(wide))


def test_glance_models_lists_every_preset_and_what_is_cached(tmp_path, tiny_model_dirs):
    fill_hub_cache(tmp_path / "hf", tiny_model_dirs)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "glance", "models", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    rows = {row["name"]: row for row in json.loads(done.stdout) if row["kind"] == "image_text"}
    assert done.returncode == 0 and set(rows) == set(models.PRESETS)
    assert rows["nomic-v1.5"]["cached"] is True and rows["nomic-v1"]["cached"] is False  # only v1.5 is in the cache
    assert all(row["licence"] and row["dim"] and row["gflop_per_image"] > 0 for row in rows.values())
    assert {row["family"] for row in rows.values()} == {"nomic", "open_clip"} and rows["clip-vit-b-32"]["licence"] == "MIT"
    table = subprocess.run([sys.executable, "-m", "glance", "models"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60).stdout
    assert all(name in table for name in rows) and "CC-BY-NC-4.0" in table

"""The multilingual open_clip model (xlm-roberta-base-ViT-B-32, preset mclip-xlmr-b-32), test-sized with random
weights, against open_clip itself; and where its transformers text tower's config and tokenizer come from, offline.

The fixture has the real layout: an open_clip folder whose text_cfg names an XLM-RoBERTa config and tokenizer held
in a second folder, as the Hub's xlm-roberta-base repo holds them. The reference is open_clip's own built-in path:
the same model_cfg registered as a model config, the safetensors as `pretrained`, get_tokenizer for the tokens.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file

from models import PRESETS, resolve_pair
from models.errors import CheckpointMismatch, ModelUnavailable
from models.openclip import OpenClipText, load_open_clip_pair
from models.synthetic import write_open_clip, write_xlm_roberta

from .conftest import FIXTURE, REPO

ARCH = "xlm-roberta-base-ViT-B-32"
OVERRIDES = {"embed_dim": 64, "vision_cfg": {"layers": 2, "width": 128}}
TEXTS = ["ein Hund am Strand", "浜辺を走る犬", "собака бежит по пляжу", "a dog running on the beach",
         "Katze im Schnee!", "誕生日ケーキ", ""]
PRESET = "mclip-xlmr-b-32"
XLMR_REPO = "FacebookAI/xlm-roberta-base"  # what open_clip's "xlm-roberta-base" is called on the Hub now
UNK = 3  # XLM-R's <unk>


@pytest.fixture(scope="module")
def mclip(tmp_path_factory) -> tuple[Path, Path]:
    """(open_clip folder, XLM-RoBERTa config+tokenizer folder), the first naming the second by its path."""
    root = tmp_path_factory.mktemp("mclip")
    xlmr = write_xlm_roberta(root / "xlm-roberta-tiny")
    names = {"hf_model_name": str(xlmr), "hf_tokenizer_name": str(xlmr)}
    return write_open_clip(root / "mclip-tiny", ARCH, seed=1, overrides={**OVERRIDES, "text_cfg": names}), xlmr


@pytest.fixture(scope="module")
def pair(mclip):
    return load_open_clip_pair(mclip[0], precision="fp32")


@pytest.fixture(scope="module")
def reference(mclip, tmp_path_factory):
    """open_clip's own (model, eval transform, tokenizer) for the fixture."""
    folder, _ = mclip
    configs = tmp_path_factory.mktemp("open_clip_configs")
    name = "glance-test-mclip-tiny"
    model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    (configs / f"{name}.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(configs)
    model, _, transform = open_clip.create_model_and_transforms(
        name, pretrained=str(folder / "open_clip_model.safetensors"))
    return model.eval(), transform, open_clip.get_tokenizer(name)


def glance(*argv, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "glance", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def fixture_images() -> list[Image.Image]:
    return [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in sorted((FIXTURE / "images").iterdir())]


# ------------------------------------------------------------------------------------------ parity with open_clip

def test_multilingual_text_embeddings_match_open_clip(pair, reference):
    _, text = pair
    model, _, tokenizer = reference
    tokens = tokenizer(TEXTS)
    assert torch.equal(text.tokenizer(TEXTS), tokens)  # the same XLM-R tokens, <s> ... </s> then <pad>
    assert not (tokens[:3] == UNK).any()  # German, Japanese and Russian become real pieces, not <unk>
    with torch.inference_mode():
        expected = model.encode_text(tokens, normalize=True)
    ours = text.embed(TEXTS)
    assert ours.dtype == torch.float32 and ours.shape == (len(TEXTS), 64)
    assert (ours - expected).abs().max().item() <= 1e-5
    assert torch.equal(text.embed_queries(TEXTS[:2]), text.embed(TEXTS[:2]))  # as typed: no task prefix
    similarity = ours @ ours.T
    assert (similarity - torch.eye(len(TEXTS))).abs().max().item() > 1e-3  # the texts are told apart
    assert similarity.triu(1).max().item() < 0.9999


def test_image_embeddings_match_open_clip(pair, reference):
    vision, _ = pair
    model, transform, _ = reference
    images = fixture_images()
    pixels = torch.stack([transform(im) for im in images])
    assert (vision.preprocess(images) - pixels).abs().max().item() <= 1e-5
    with torch.inference_mode():
        expected = model.encode_image(pixels, normalize=True)
    assert (vision.embed_images(images) - expected).abs().max().item() <= 1e-5


def test_one_module_no_unpickling(mclip, pair, monkeypatch):
    vision, text = pair
    assert vision.model is text.model and vision.dim == text.dim == 64
    assert vision.version == text.version == "open_clip:mclip-tiny"

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load or pickle was called")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(target, name, refuse)
    again = OpenClipText(mclip[0], "fp32")
    assert torch.equal(again.embed(TEXTS[:3]), text.embed(TEXTS[:3]))


def test_checkpoint_with_old_transformers_position_ids_loads(mclip, pair, tmp_path):
    """Checkpoints saved with transformers < 4.31 (the laion one, 2022) hold the text tower's position_ids."""
    folder = shutil.copytree(mclip[0], tmp_path / "old")
    state = load_file(str(folder / "open_clip_model.safetensors"))
    state["text.transformer.embeddings.position_ids"] = torch.arange(514).unsqueeze(0)
    save_file(state, str(folder / "open_clip_model.safetensors"))
    assert torch.equal(OpenClipText(folder, "fp32").embed(TEXTS[:2]), pair[1].embed(TEXTS[:2]))


# ------------------------------------------------------------------------------------------ factory and CLI

def test_the_factory_resolves_it_as_one_open_clip_checkpoint(mclip):
    vision, text = resolve_pair(str(mclip[0]))
    assert vision.family == text.family == "open_clip" and vision.folder == text.folder == mclip[0].resolve()
    assert vision.dim == text.dim == 64


def test_preset_entry():
    preset = PRESETS[PRESET]
    assert preset.vision == preset.text == "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"
    assert (preset.family, preset.licence, preset.languages, preset.dim) == ("open_clip", "MIT", "multilingual (~100)",
                                                                             512)
    assert preset.gflop_per_image == PRESETS["clip-vit-b-32"].gflop_per_image  # the same ViT-B-32 at 224 px
    assert preset.download_mb > PRESETS["clip-vit-b-32"].download_mb  # xlm-roberta-base's 250k-word embeddings


def test_embed_cli_works_offline_on_the_folder(mclip, pair):
    done = glance("embed", "--vision-model", mclip[0], "--text", TEXTS[1], "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["dim"] == 64
    assert (torch.tensor(row["vector"]) - pair[1].embed([TEXTS[1]])[0]).abs().max().item() <= 1e-6


def fill_hub_cache(hf_home: Path, repo_id: str, folder: Path, edit=None) -> Path:
    """A repo in the standard Hub cache layout, as a first run with network leaves it."""
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, snapshot)
    if edit:
        edit(snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(snapshot.name)
    return repo_dir


def test_the_preset_from_the_hub_cache_runs_offline(mclip, pair, tmp_path):
    """A first run caches both repos: the laion checkpoint, whose config names "xlm-roberta-base" as the real one
    does, and FacebookAI/xlm-roberta-base's config and tokenizer. Later runs need no network."""
    folder, xlmr = mclip
    hf_home = tmp_path / "hf"

    def name_the_hub_repo(snapshot: Path) -> None:
        config = json.loads((snapshot / "open_clip_config.json").read_text())
        config["model_cfg"]["text_cfg"].update(hf_model_name="xlm-roberta-base", hf_tokenizer_name="xlm-roberta-base")
        (snapshot / "open_clip_config.json").write_text(json.dumps(config))

    fill_hub_cache(hf_home, PRESETS[PRESET].vision, folder, name_the_hub_repo)
    xlmr_cache = fill_hub_cache(hf_home, XLMR_REPO, xlmr)
    rows = {r["name"]: r for r in json.loads(glance("models", "--json", HF_HOME=str(hf_home)).stdout)}
    assert rows[PRESET]["cached"] is True and rows["clip-vit-b-32"]["cached"] is False
    done = glance("embed", "--vision-model", PRESET, "--text", TEXTS[2], "--precision", "fp32", HF_HOME=str(hf_home))
    assert done.returncode == 0, done.stderr
    vector = torch.tensor(json.loads(done.stdout)["vector"])
    assert (vector - pair[1].embed([TEXTS[2]])[0]).abs().max().item() <= 1e-6  # the same model, from the cache

    shutil.rmtree(xlmr_cache)  # the checkpoint alone cannot build its text tower
    rows = {r["name"]: r for r in json.loads(glance("models", "--json", HF_HOME=str(hf_home)).stdout)}
    assert rows[PRESET]["cached"] is False
    done = glance("embed", "--vision-model", PRESET, "--text", "a dog", HF_HOME=str(hf_home))
    error = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in error and error.startswith("glance: error:"), done.stderr
    assert f"model {XLMR_REPO} is not in the Hugging Face cache" in error and "HF_HUB_OFFLINE=1" in error
    assert "config.json" in error and "text_cfg hf_model_name" in error


# ------------------------------------------------------------------------------------------ where the files are

def test_a_relative_path_is_read_from_the_model_folder(mclip, pair, tmp_path):
    folder = shutil.copytree(mclip[0], tmp_path / "portable")
    shutil.copytree(mclip[1], folder / "xlm-roberta-tiny")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"].update(hf_model_name="./xlm-roberta-tiny", hf_tokenizer_name="./xlm-roberta-tiny")
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    assert torch.equal(OpenClipText(folder, "fp32").embed(TEXTS[:3]), pair[1].embed(TEXTS[:3]))


def _with_text_tower(src: Path, dest: Path, xlmr: Path | str) -> Path:
    folder = shutil.copytree(src, dest)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"].update(hf_model_name=str(xlmr), hf_tokenizer_name=str(xlmr))
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case", ["no-folder", "no-config", "no-tokenizer", "uncached-hub-repo"])
def test_missing_text_tower_files_are_one_line_errors(mclip, tmp_path, case):
    xlmr = {"no-folder": tmp_path / "nowhere", "uncached-hub-repo": "xlm-roberta-base"}.get(case)
    if xlmr is None:
        xlmr = shutil.copytree(mclip[1], tmp_path / case)
        (xlmr / {"no-config": "config.json", "no-tokenizer": "tokenizer.json"}[case]).unlink()
    folder = _with_text_tower(mclip[0], tmp_path / "model", xlmr)
    expected = {"no-folder": f"no model folder at '{xlmr}'", "no-config": "lacks config.json",
                "no-tokenizer": "lacks tokenizer.json",
                "uncached-hub-repo": f"model {XLMR_REPO} is not in the Hugging Face cache"}[case]
    with pytest.raises(ModelUnavailable) as err:
        OpenClipText(folder, "fp32")
    message = str(err.value)
    assert "\n" not in message and expected in message
    assert message.startswith(f"{folder / 'open_clip_config.json'} builds its text tower from {xlmr}")
    if case == "no-tokenizer":  # and the command says so in one line, no traceback
        done = glance("embed", "--vision-model", folder, "--text", "a dog")
        assert done.returncode == 2 and done.stderr.strip() == f"glance: error: {message}", done.stderr


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_a_text_tower_asking_for_remote_code_is_refused(mclip, tmp_path, file):
    xlmr = shutil.copytree(mclip[1], tmp_path / "remote")
    raw = json.loads((xlmr / file).read_text()) if (xlmr / file).is_file() else {}
    (xlmr / file).write_text(json.dumps({**raw, "auto_map": {"AutoModel": "evil.Model"}}))
    folder = _with_text_tower(mclip[0], tmp_path / "model", xlmr)
    with pytest.raises(CheckpointMismatch, match="remote code"):
        OpenClipText(folder, "fp32")

"""Cold start: the native text model reproduces transformers' NomicBertModel, and a one-shot `glance search`
imports neither transformers nor gradio (they cost seconds of imports before the first answer)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from models.nomic_text import NomicTextConfig, NomicTextModel, load_official, load_tokenizer, tokenize
from models.text import native_config

REPO = Path(__file__).resolve().parent.parent
TEXT_DIR = REPO / "tests" / "fixtures" / "nomic-tiny" / "text-v1.5"
TEXTS = ["search_query: a dog", "search_document: a much longer text about the quarterly figures, with tables",
         "search_query: receipts"]


def test_native_text_model_matches_transformers_nomic_bert():
    from transformers import NomicBertModel

    official = json.loads((TEXT_DIR / "config.json").read_text())
    reference = NomicBertModel.from_pretrained(str(TEXT_DIR), config=native_config(official), dtype=torch.float32,
                                               use_safetensors=True).eval()
    native = NomicTextModel(NomicTextConfig.from_official(official)).eval()
    load_official(native, TEXT_DIR / "model.safetensors", torch.float32)
    tokens = tokenize(load_tokenizer(TEXT_DIR, 2048), TEXTS)
    assert tokens["attention_mask"].min() == 0  # the batch is padded: the mask matters
    with torch.inference_mode():
        want = reference(**tokens).last_hidden_state
        got = native(tokens["input_ids"], tokens["attention_mask"])
    keep = tokens["attention_mask"].bool()  # padded positions are pooled out
    assert torch.allclose(got[keep], want[keep], atol=1e-5)
    names = {n for n, _ in native.named_parameters()}
    assert names == {n for n, _ in reference.named_parameters()}  # LoRA tunings address these names


def test_truncation_keeps_the_separator():
    tokenizer = load_tokenizer(TEXT_DIR, 8)
    ids = tokenize(tokenizer, ["search_query: " + "dog " * 50])["input_ids"][0].tolist()
    assert len(ids) == 8 and ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")


def glance_in_fresh_process(args: list[str], heavy: tuple[str, ...], env: dict | None = None):
    """`glance ARGS` in a new Python; its stdout ends with `LOADED [the heavy modules it imported] exit status`."""
    # main(argv) as a caller, not as the program: the program would end without returning (core/errors.finish)
    probe = ("import sys, glance.cli\n"
             "heavy, argv = sys.argv[1].split(','), sys.argv[2:]\n"
             "try:\n    glance.cli.main(argv)\n"
             "except SystemExit as done:\n    code = done.code\n"
             "print('LOADED', sorted(m for m in heavy if m in sys.modules), code)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", probe, ",".join(heavy), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_glance_search_imports_no_transformers_or_gradio(library, tmp_path):
    done = glance_in_fresh_process(["search", "cat", "--db", str(library.db)], ("transformers", "gradio"),
                                   {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert "LOADED [] 0" in done.stdout, done.stdout + done.stderr
    assert "\t" in done.stdout  # it printed hits: score<TAB>path


def test_an_unchanged_re_index_imports_no_torch(tiny_model_dirs, tmp_path):
    """Nothing to embed means no model and no torch (~3 s of imports on 2 cores): the re-run a cron job does."""
    from indexer.pipeline import IndexOptions, index
    from tests.indexer_library import pattern

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        pattern(i, (16, 12)).save(photos / f"p{i}.png")
    vision, text = tiny_model_dirs
    db = tmp_path / "index"
    assert index(IndexOptions(paths=[str(photos)], db=db, vision_model=str(vision), text_model=str(text),
                              precision="fp32")).added == 3
    done = glance_in_fresh_process(["index", str(photos), "--db", str(db), "--json"],
                                   ("torch", "transformers", "gradio"))
    assert "LOADED [] 0" in done.stdout, done.stdout + done.stderr
    assert json.loads(done.stdout.splitlines()[0])["unchanged"] == 3


def test_precision_choice_is_cached_replayed_and_a_corrupt_cache_is_ignored(tmp_path, monkeypatch):
    import models
    from models.precision_cache import cache_file

    monkeypatch.setenv("GLANCE_PRECISION_CACHE", str(tmp_path / "precision.json"))
    first = models.TextEmbedder(str(TEXT_DIR), precision="auto")
    stored = json.loads(cache_file().read_text())
    (entry,) = stored.values()
    assert entry["path"] == first.precision.path and entry["key"]["weights"] == str(TEXT_DIR / "model.safetensors")
    again = models.TextEmbedder(str(TEXT_DIR), precision="auto")
    assert again.precision == first.precision
    assert torch.allclose(again.embed(TEXTS), first.embed(TEXTS), atol=1e-6)  # held weights replayed as chosen
    # The entry is what a load follows: a stored "fp32" answer is taken without probing.
    entry["path"], entry["cosine_to_fp32"] = "fp32", 1.0
    cache_file().write_text(json.dumps(stored))
    replayed = models.TextEmbedder(str(TEXT_DIR), precision="auto")
    assert replayed.precision.path == "fp32" and {p.dtype for p in replayed.encoder.model.parameters()} == {
        torch.float32}
    cache_file().write_text("{not json")
    probed = models.TextEmbedder(str(TEXT_DIR), precision="auto")
    assert probed.precision == first.precision
    assert json.loads(cache_file().read_text())  # rewritten whole


ORDER_PROBE = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in ("core", "torch") and name not in seen:
            seen.append(name)
            if name == "torch":
                seen.append(os.environ.get("GOMP_SPINCOUNT"))
sys.meta_path.insert(0, Watch())
import {module}
import torch
print(seen)
"""


def test_every_entry_point_sets_the_openmp_spin_before_torch_loads_and_keeps_a_users_own():
    """core/__init__.py: libgomp reads GOMP_SPINCOUNT once, when torch loads it."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    for module in ("glance.cli", "app", "search.engine", "indexer.pipeline"):
        out = subprocess.run([sys.executable, "-c", ORDER_PROBE.format(module=module)], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True).stdout
        assert out.split() == ["['core',", "'torch',", "'10000']"], (module, out)
    mine = subprocess.run([sys.executable, "-c", ORDER_PROBE.format(module="app")], cwd=REPO,
                          env={**env, "GOMP_SPINCOUNT": "500"}, capture_output=True, text=True, check=True).stdout
    assert mine.split()[-1] == "'500']"

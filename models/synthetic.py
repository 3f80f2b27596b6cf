"""Random-weight checkpoints in the official Hub layout, for tests and benchmarks (no download needed).

The configs are the official ones, resized; tensor names and shapes are the official checkpoint's. The caller
names the `template`: a folder in the official layout (`vision-v1.5/`, `text-v1.5/` with every official config
key and the tokenizer files), such as the tiny fixture the tests and benchmarks ship.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from .text import native_config
from .vision import NomicVisionModel, VisionConfig, official_keys

SIZES = {
    "full": {"n_embd": 768, "n_head": 12, "n_layer": 12},
    "tiny": {"n_embd": 128, "n_head": 2, "n_layer": 2},
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _randomize(state: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Matrices ~ N(0, 0.02); vectors (biases, LayerNorm) random too, so ordering bugs cannot hide."""
    out = {}
    for key, value in state.items():
        if value.dim() >= 2:
            out[key] = torch.randn(value.shape, generator=gen) * 0.02
        elif key.endswith("weight"):
            out[key] = 1.0 + torch.randn(value.shape, generator=gen) * 0.1
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.05
    return out


def write_vision(folder: Path, size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float16,
                 preprocessor: dict | None = None, *, template: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((template / "vision-v1.5" / "config.json").read_text())
    config.update(SIZES[size], n_inner=2048.0 if size == "full" else 256.0)
    model = NomicVisionModel(VisionConfig.from_official(config))
    native = _randomize(model.state_dict(), torch.Generator().manual_seed(seed))
    official = {}
    for key, sources in official_keys(list(native)).items():
        for part, name in zip(native[key].chunk(len(sources)), sources):
            official[name] = part.contiguous().to(dtype)
    save_file(official, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    pre = json.loads((template / "vision-v1.5" / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor or pre, indent=2))
    return folder


def write_text(folder: Path, size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float16, *,
               template: Path) -> Path:
    from transformers import NomicBertModel

    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((template / "text-v1.5" / "config.json").read_text())
    config.update(SIZES[size], n_inner=3072 if size == "full" else 256)
    native = _randomize(NomicBertModel(native_config(config)).state_dict(), torch.Generator().manual_seed(seed))
    official = {}
    for key, value in native.items():  # native transformers names -> official names
        if "position_ids" in key or "token_type_ids" in key or "inv_freq" in key:
            continue
        name = (key.replace("embeddings.LayerNorm", "emb_ln").replace("layers.", "encoder.layers.")
                .replace("self_attn.o_proj", "attn.out_proj").replace("mlp.up_proj", "mlp.fc11")
                .replace("mlp.gate_proj", "mlp.fc12").replace("mlp.down_proj", "mlp.fc2")
                .replace("post_attention_layernorm", "norm1").replace("post_mlp_layernorm", "norm2"))
        if "self_attn.q_proj" in name:
            qkv = [native[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            official[name.replace("self_attn.q_proj", "attn.Wqkv")] = torch.cat(qkv).to(dtype)
        elif "self_attn.k_proj" not in name and "self_attn.v_proj" not in name:
            official[name] = value.contiguous().to(dtype)
    save_file(official, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(template / "text-v1.5" / name, folder / name)
    return folder


def write_pair(root: Path, size: str = "tiny", seed: int = 0, version: str = "v1.5",
               dtype: torch.dtype = torch.float16, *, template: Path) -> tuple[Path, Path]:
    """(vision folder, text folder) named like the Hub repos, so the release is recognisable."""
    vision = write_vision(root / f"nomic-embed-vision-{version}", size, seed, dtype, template=template)
    text = write_text(root / f"nomic-embed-text-{version}", size, seed + 1, dtype, template=template)
    return vision, text


# Words the synthetic HF tokenizer knows (anything else is <unk>): enough for tests to tell texts apart.
TOKENIZER_WORDS = ("a dog cat photo of the on in at beach sunset receipts running red blue green car house tree "
                   "person people snow mountain city night day sky water food birthday cake").split()


def write_open_clip(folder: Path, model_name: str, *, seed: int = 0, overrides: dict | None = None,
                    preprocess: dict | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """An open_clip model in the Hub layout: open_clip_config.json + open_clip_model.safetensors, random weights.

    model_name: a built-in open_clip architecture ("ViT-B-32", "ViT-B-16-SigLIP", ...).
    overrides:  merged into its model_cfg, one level deep for vision_cfg/text_cfg (e.g. fewer layers for tests).
    preprocess: merged into the preprocess_cfg, which is otherwise what the Hub's config says for the
                architecture's first pretrained tag (mean/std, interpolation, resize_mode) at its image size.
    A text tower with an HF tokenizer (SigLIP) also gets a small synthetic tokenizer.json: the real one is a
    Hub download, and only its format matters here. A transformers text tower (xlm-roberta-base-ViT-B-32) is
    built from the config its text_cfg names: give it a folder from `write_xlm_roberta` in `overrides`.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    from . import hftext
    from .openclip import build_model_random

    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ValueError(f"{model_name} is not an open_clip architecture")
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(model_cfg.get(key), dict):
            model_cfg[key].update(value)
        else:
            model_cfg[key] = value
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    pre = merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(model_name, tags[0]) if tags else {})
    pre.update(size=model_cfg["vision_cfg"].get("image_size", 224), **(preprocess or {}))
    pre.pop("mode", None)  # the Hub's configs leave it out (always RGB)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": pre}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    hf_text = hftext.resolve(model_cfg["text_cfg"], folder)
    if model_cfg["text_cfg"].get("hf_tokenizer_name") and not hf_text:
        _write_hf_tokenizer(folder, model_cfg["text_cfg"]["context_length"])
    torch.manual_seed(seed)  # open_clip's own init for anything _randomize leaves alone
    model = build_model_random(folder, hf_text.text_cfg if hf_text else None)
    state = _randomize(model.state_dict(), torch.Generator().manual_seed(seed))
    save_file({k: v.contiguous().to(dtype) for k, v in state.items()}, str(folder / "open_clip_model.safetensors"),
              metadata={"format": "pt"})
    return folder


def _write_hf_tokenizer(folder: Path, context_length: int) -> None:
    """A T5-like word-level tokenizer (pad 0, eos 1, unk 2; eos appended), saved as transformers does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(TOKENIZER_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=context_length)
    fast.save_pretrained(str(folder))


# What the synthetic XLM-RoBERTa tokenizer learns its pieces from: a few scripts, so multilingual texts become
# real pieces (the rest falls back to single characters, else <unk>).
XLM_ROBERTA_CORPUS = ("a dog running on the beach at sunset", "a photo of a cat in the snow", "birthday cake",
                      "ein Hund am Strand bei Sonnenuntergang", "eine Katze im Schnee", "Geburtstagskuchen",
                      "浜辺を走る犬", "雪の中の猫", "誕生日ケーキ", "собака бежит по пляжу", "кошка в снегу",
                      "un chien sur la plage", "un gato en la nieve", "receipts")


def write_xlm_roberta(folder: Path, hidden: int = 32, layers: int = 2, heads: int = 2) -> Path:
    """An XLM-RoBERTa text model's config and tokenizer as its Hub repo holds them (config.json, tokenizer.json:
    no tokenizer_config.json, so transformers picks the tokenizer class from config.json), test-sized.

    The tokenizer is a sentencepiece-style Unigram with XLM-R's special tokens (<s> 0, <pad> 1, </s> 2, <unk> 3)
    and template (<s> text </s>). No weights: an open_clip checkpoint holds the tower's.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.train_from_iterator(XLM_ROBERTA_CORPUS, trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>",
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.save(str(folder / "tokenizer.json"))
    config = XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=heads, intermediate_size=hidden * 4, max_position_embeddings=514,
                              architectures=["XLMRobertaForMaskedLM"])
    config.save_pretrained(str(folder))
    return folder

"""Load a model's tokenizer as a `tokenizers.Tokenizer`, truncation and padding off.

features.py cuts the sliding windows itself, so whatever truncation/padding a
tokenizer.json ships with (MiniLM's pads everything to 128) is switched off here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from qa_core.hub import resolve_model_dir

__all__ = ["load_tokenizer", "TokenizerNotFoundError", "TOKENIZER_FILES"]

# The files that make up a tokenizer in Hugging Face layout (save_pretrained copies these).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "added_tokens.json")
SPECIAL_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                    "cls_token": "[CLS]", "mask_token": "[MASK]"}


class TokenizerNotFoundError(RuntimeError):
    """The model directory has no usable tokenizer files."""


def load_tokenizer(ref: str | os.PathLike, *, revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None, token: str | bool | None = None) -> Tokenizer:
    """Tokenizer for a model reference (local dir, ``pkg:...`` or Hub id; see `qa_core.hub`)."""
    model_dir = resolve_model_dir(ref, revision=revision, cache_dir=cache_dir, token=token)
    if (model_dir / "tokenizer.json").exists():
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    elif (model_dir / "vocab.txt").exists():
        tokenizer = build_wordpiece_tokenizer(model_dir)
    else:
        raise TokenizerNotFoundError(
            f"{model_dir}: no tokenizer.json and no vocab.txt. Copy the tokenizer files of the base "
            f"model into this directory (or pass tokenizer_dir= to save_pretrained).")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def build_wordpiece_tokenizer(model_dir: Path) -> Tokenizer:
    """A BERT WordPiece tokenizer from vocab.txt, with the casing tokenizer_config.json declares.

    Mirrors what transformers' BertTokenizerFast builds from the same files."""
    settings = _read_tokenizer_settings(model_dir)
    tokenizer_class = settings.get("tokenizer_class")
    if tokenizer_class and not str(tokenizer_class).startswith(("Bert", "DistilBert")):
        raise TokenizerNotFoundError(
            f"{model_dir / 'tokenizer_config.json'}: tokenizer_class {tokenizer_class!r} cannot be rebuilt "
            f"from vocab.txt; this needs a tokenizer.json.")
    special = {name: _token_text(settings.get(name, default)) for name, default in SPECIAL_DEFAULTS.items()}
    vocab = _read_vocab(model_dir / "vocab.txt")
    for name, text in special.items():
        if text not in vocab:
            raise TokenizerNotFoundError(f"{model_dir / 'vocab.txt'}: special token {text!r} ({name}) "
                                         f"is not in the vocabulary")

    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=special["unk_token"],
                                           continuing_subword_prefix="##", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(settings.get("tokenize_chinese_chars", True)),
        strip_accents=settings.get("strip_accents"),  # None: strip exactly when lowercasing
        lowercase=bool(settings.get("do_lower_case", True)))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = special["cls_token"], special["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    # Special tokens typed in raw text stay whole, as in transformers.
    tokenizer.add_special_tokens(list(dict.fromkeys(special.values())))
    return tokenizer


def _read_tokenizer_settings(model_dir: Path) -> dict:
    settings: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.exists():
            try:
                settings.update(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError as error:
                raise TokenizerNotFoundError(f"{path}: not valid JSON ({error})") from None
    return settings


def _token_text(value) -> str:
    # Special tokens are stored either as plain strings or as AddedToken dicts.
    return value["content"] if isinstance(value, dict) else str(value)


def _read_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            vocab[line.rstrip("\n")] = index
    return vocab

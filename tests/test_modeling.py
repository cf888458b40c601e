"""qa_core.modeling against transformers: logits, gradients, checkpoint layouts, round trips."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import build_tiny_checkpoint
from qa_core.modeling import (CheckpointError, Dropout, EncoderConfig, QAModel, checkpoint_names,
                              dropout_attention,
                              load_model, right_padded_lengths,
                              use_per_sequence_attention)

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

LOGIT_TOL = 1e-5
GRAD_TOL = 1e-4
SHAPES = [(1, 7), (3, 17), (2, 64)]


# ----------------------------------------------------------------------------- helpers

def hf_model(path):
    model, info = transformers.AutoModelForQuestionAnswering.from_pretrained(
        path, output_loading_info=True, attn_implementation="sdpa")
    return model.eval(), info


def make_batch(batch, seq, *, seed=0, token_types=True):
    """Random ids with ragged padding (row 0 unpadded) and question/context type ids."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(2, seq // 3), seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = torch.randint(999, 30000, (batch, seq), generator=g) * mask
    ids[:, 0] = 101
    types = ((torch.arange(seq)[None, :] >= seq // 3) & mask.bool()).long() if token_types else None
    start = (torch.rand(batch, generator=g) * lengths).long()
    end = torch.minimum(start + 2, lengths - 1)
    return ids, mask, types, start, end


def hf_forward(model, ids, mask, types):
    kwargs = {"token_type_ids": types} if types is not None else {}
    out = model(input_ids=ids, attention_mask=mask, **kwargs)
    return out.start_logits, out.end_logits


def span_loss(start_logits, end_logits, start, end):
    return F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end)


def hf_grad_for(ours: QAModel, hf, our_name: str, hf_names) -> torch.Tensor:
    prefix = "distilbert." if ours.config.model_type == "distilbert" else "bert."
    params = dict(hf.named_parameters())
    grads = [params[n if n.startswith("qa_outputs.") else prefix + n].grad for n in hf_names]
    return torch.cat(grads, dim=0)


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- parity

TINY_VARIANTS = {
    "distilbert": dict(model_type="distilbert"),
    "distilbert-relu-3heads": dict(model_type="distilbert", layers=3, hidden=48, heads=3, activation="relu"),
    "distilbert-sinusoidal": dict(model_type="distilbert", sinusoidal_pos_embds=True),
    "bert": dict(model_type="bert"),
    "bert-gelu_new-eps1e-6": dict(model_type="bert", layers=1, hidden=64, heads=8, hidden_act="gelu_new",
                                  layer_norm_eps=1e-6),
}


@pytest.fixture(scope="module", params=sorted(TINY_VARIANTS))
def variant_dir(request, tmp_path_factory):
    spec = dict(TINY_VARIANTS[request.param])
    model_type = spec.pop("model_type")
    return build_tiny_checkpoint(tmp_path_factory.mktemp(request.param), model_type, seed=1, **spec)


@pytest.mark.parametrize("batch,seq", SHAPES)
def test_logits_and_gradients_equal_transformers(variant_dir, batch, seq):
    ours = load_model(variant_dir).eval()
    hf, _ = hf_model(variant_dir)
    ids, mask, types, start, end = make_batch(batch, seq, seed=batch * seq)
    if not ours.uses_token_type_ids:
        types = None

    our_start, our_end = ours(ids, mask, types)
    hf_start, hf_end = hf_forward(hf, ids, mask, types)
    # Padded positions carry logits too; both models must agree there as well.
    torch.testing.assert_close(our_start, hf_start, atol=LOGIT_TOL, rtol=0)
    torch.testing.assert_close(our_end, hf_end, atol=LOGIT_TOL, rtol=0)

    span_loss(our_start, our_end, start, end).backward()
    span_loss(hf_start, hf_end, start, end).backward()
    compared = 0
    for our_name, hf_names in checkpoint_names(ours.config):
        param = ours.get_parameter(our_name)
        if not param.requires_grad:  # sinusoidal positions are fixed in ours
            assert our_name == "embeddings.position_embeddings.weight" and ours.config.sinusoidal_positions
            continue
        torch.testing.assert_close(param.grad, hf_grad_for(ours, hf, our_name, hf_names),
                                   atol=GRAD_TOL, rtol=0, msg=lambda m: f"{our_name}: {m}")
        compared += 1
    assert compared == sum(p.requires_grad for p in ours.parameters())


def test_bert_token_type_ids_matter_and_match(tiny_bert_dir):
    ours = load_model(tiny_bert_dir).eval()
    hf, _ = hf_model(tiny_bert_dir)
    ids, mask, types, _, _ = make_batch(3, 20, seed=5)
    with torch.no_grad():
        with_types = ours(ids, mask, types)
        without = ours(ids, mask)
        torch.testing.assert_close(with_types[0], hf_forward(hf, ids, mask, types)[0], atol=LOGIT_TOL, rtol=0)
        torch.testing.assert_close(without[0], hf_forward(hf, ids, mask, None)[0], atol=LOGIT_TOL, rtol=0)
    assert not torch.allclose(with_types[0], without[0])


def test_unpadded_batch_and_bf16_autocast(tiny_distilbert_dir):
    ours = load_model(tiny_distilbert_dir).eval()
    hf, _ = hf_model(tiny_distilbert_dir)
    ids = torch.randint(999, 30000, (2, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask)[0], hf_forward(hf, ids, mask, None)[0], atol=LOGIT_TOL, rtol=0)
        torch.testing.assert_close(ours(ids, None)[1], hf_forward(hf, ids, None, None)[1], atol=LOGIT_TOL, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            start, end = ours(ids, mask)
    assert start.dtype == end.dtype == torch.bfloat16 and start.shape == (2, 12)


def test_single_thread_per_sequence_attention_matches(tiny_bert_dir):
    ours = load_model(tiny_bert_dir).eval()
    hf, _ = hf_model(tiny_bert_dir)
    ids, mask, types, start, end = make_batch(4, 40, seed=11)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert use_per_sequence_attention(ids.device)
        our_start, our_end = ours(ids, mask, types)
    finally:
        torch.set_num_threads(threads)
    hf_start, hf_end = hf_forward(hf, ids, mask, types)
    torch.testing.assert_close(our_start, hf_start, atol=LOGIT_TOL, rtol=0)
    torch.testing.assert_close(our_end, hf_end, atol=LOGIT_TOL, rtol=0)
    span_loss(our_start, our_end, start, end).backward()
    span_loss(hf_start, hf_end, start, end).backward()
    for our_name, hf_names in checkpoint_names(ours.config):
        torch.testing.assert_close(ours.get_parameter(our_name).grad, hf_grad_for(ours, hf, our_name, hf_names),
                                   atol=GRAD_TOL, rtol=0)


def test_left_padded_and_holed_masks_take_the_masked_path_and_match(tiny_bert_dir):
    ours = load_model(tiny_bert_dir).eval()
    hf, _ = hf_model(tiny_bert_dir)
    ids, mask, types, _, _ = make_batch(3, 20, seed=9)
    left = mask.flip(1)        # left padding
    holed = mask.clone()
    holed[0, 5:8] = 0          # a hole inside row 0
    for odd in (left, holed):
        assert right_padded_lengths(odd.bool()) is None
        with torch.no_grad():
            for a, b in zip(ours(ids, odd, types), hf_forward(hf, ids, odd, types)):
                torch.testing.assert_close(a, b, atol=LOGIT_TOL, rtol=0)
    assert right_padded_lengths(mask.bool()) == mask.sum(1).tolist()
    assert right_padded_lengths(torch.tensor([[True, False], [False, False]])) is None  # empty row


def test_too_long_input_is_a_clear_error(tiny_distilbert_dir):
    ours = load_model(tiny_distilbert_dir)
    ids = torch.ones(1, 513, dtype=torch.long)
    with pytest.raises(ValueError, match="513 exceeds max_position_embeddings 512"):
        ours(ids, torch.ones_like(ids))


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
def test_ours_to_transformers_round_trip(model_type, tmp_path):
    # A bare checkpoint: the fresh QA head must survive the trip too.
    src = build_tiny_checkpoint(tmp_path / "src", model_type, head="bare", seed=2)
    ours = load_model(src, dropout={"hidden": 0.2, "attention": 0.05, "head": 0.3}).eval()
    assert ours.load_report.fresh == ("qa_outputs.weight", "qa_outputs.bias")
    out = ours.save_pretrained(tmp_path / "out")

    hf, info = hf_model(out)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = json.loads((out / "config.json").read_text())
    family = "DistilBert" if model_type == "distilbert" else "Bert"
    assert config["architectures"] == [f"{family}ForQuestionAnswering"]
    hidden_key, attention_key = (("dropout", "attention_dropout") if model_type == "distilbert"
                                 else ("hidden_dropout_prob", "attention_probs_dropout_prob"))
    assert (config[hidden_key], config[attention_key], config["qa_dropout"]) == (0.2, 0.05, 0.3)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()

    ids, mask, types, _, _ = make_batch(2, 30, seed=3, token_types=model_type == "bert")
    with torch.no_grad():
        for a, b in zip(ours(ids, mask, types), hf_forward(hf, ids, mask, types)):
            torch.testing.assert_close(a, b, atol=LOGIT_TOL, rtol=0)
    # Our reload reads the overridden dropout back from config.json.
    assert load_model(out).dropout_report() == {"hidden": 0.2, "attention": 0.05, "head": 0.3}


@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
def test_transformers_to_ours_to_transformers_is_lossless(model_type, tmp_path):
    src = build_tiny_checkpoint(tmp_path / "src", model_type, seed=4)
    ours = load_model(src)
    assert ours.load_report.fresh == () and ours.load_report.unexpected == ()
    out = ours.save_pretrained(tmp_path / "out")
    original, saved = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(saved) == set(original) - {"bert.embeddings.position_ids"}
    for key, tensor in saved.items():
        assert torch.equal(tensor, original[key]), key
    hf, info = hf_model(out)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_save_into_source_dir_and_explicit_tokenizer_dir(tiny_distilbert_dir, tmp_path, minilm_dir):
    work = copy_checkpoint(tiny_distilbert_dir, tmp_path / "work")
    model = load_model(work)
    model.save_pretrained(work)  # tokenizer files are already there: must not fail on copying onto itself
    assert (work / "tokenizer.json").exists()
    scratch = QAModel(model.config)  # no source dir
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        scratch.save_pretrained(tmp_path / "x", tokenizer_dir=tmp_path)
    scratch.save_pretrained(tmp_path / "y", tokenizer_dir=minilm_dir)
    assert (tmp_path / "y" / "vocab.txt").read_bytes() == (minilm_dir / "vocab.txt").read_bytes()


# ----------------------------------------------------------------------------- checkpoint layouts

LAYOUTS = [
    ("distilbert", "qa", "DistilBertForQuestionAnswering", ()),
    ("distilbert", "bare", "DistilBertModel (bare)", ()),
    ("distilbert", "mlm", "DistilBertForMaskedLM",
     ("vocab_layer_norm.bias", "vocab_layer_norm.weight", "vocab_projector.bias",
      "vocab_transform.bias", "vocab_transform.weight")),
    ("bert", "qa", "BertForQuestionAnswering", ()),
    ("bert", "bare", "BertModel (bare)", ("pooler.dense.bias", "pooler.dense.weight")),
]


@pytest.mark.parametrize("model_type,head,layout,ignored", LAYOUTS)
def test_checkpoint_layouts_load(model_type, head, layout, ignored, tmp_path):
    src = build_tiny_checkpoint(tmp_path, model_type, head=head, seed=6)
    tensors = load_file(str(src / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unexpected keys, so no warning
        model = load_model(src)
    report = model.load_report
    assert report.layout == layout
    assert report.ignored == ignored
    assert report.unexpected == ()
    assert report.fresh == (() if head == "qa" else ("qa_outputs.weight", "qa_outputs.bias"))
    assert set(report.loaded) | set(report.ignored) == set(tensors)

    # Encoder weights land where they belong, q/k/v fused in order.
    prefix = "" if head == "bare" else f"{model_type}."
    layer = "transformer.layer.1.attention.{}_lin.weight" if model_type == "distilbert" \
        else "encoder.layer.1.attention.self.{}.weight"
    expected_qkv = torch.cat([tensors[prefix + layer.format(x)] for x in
                              (("q", "k", "v") if model_type == "distilbert" else ("query", "key", "value"))])
    assert torch.equal(model.layers[1].attention.qkv.weight, expected_qkv)
    assert torch.equal(model.embeddings.word_embeddings.weight, tensors[prefix + "embeddings.word_embeddings.weight"])
    if head == "qa":
        assert torch.equal(model.qa_outputs.weight, tensors["qa_outputs.weight"])
    else:  # fresh head: HF-style init, trainable
        assert model.qa_outputs.weight.std().item() < 0.1 and torch.all(model.qa_outputs.bias == 0)
        assert model.qa_outputs.weight.requires_grad


def test_minilm_bare_checkpoint_ignores_position_ids_and_pooler(minilm_dir):
    report = load_model(minilm_dir).load_report
    assert report.layout == "BertModel (bare)"
    assert report.ignored == ("embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight")
    assert report.fresh == ("qa_outputs.weight", "qa_outputs.bias") and report.unexpected == ()
    assert "ignored (other heads / buffers): embeddings.position_ids" in report.summary()


def test_pytorch_bin_and_sharded_safetensors_load_the_same(tiny_bert_dir, tmp_path):
    reference = load_model(tiny_bert_dir).eval()
    tensors = load_file(str(tiny_bert_dir / "model.safetensors"))
    ids, mask, types, _, _ = make_batch(2, 16, seed=7)

    bin_dir = copy_checkpoint(tiny_bert_dir, tmp_path / "bin")
    (bin_dir / "model.safetensors").unlink()
    torch.save(tensors, bin_dir / "pytorch_model.bin")

    sharded = copy_checkpoint(tiny_bert_dir, tmp_path / "sharded")
    (sharded / "model.safetensors").unlink()
    keys = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((keys[::2], keys[1::2])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(sharded / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    with torch.no_grad():
        expected = reference(ids, mask, types)
        for path in (bin_dir, sharded):
            model = load_model(path).eval()
            assert model.load_report.fresh == ()
            for a, b in zip(model(ids, mask, types), expected):
                assert torch.equal(a, b)


def test_pickled_bin_with_arbitrary_objects_is_refused(tiny_bert_dir, tmp_path):
    bad = copy_checkpoint(tiny_bert_dir, tmp_path / "bad")
    (bad / "model.safetensors").unlink()
    torch.save({"weights": load_file(str(tiny_bert_dir / "model.safetensors")), "obj": object()},
               bad / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_model(bad)


def test_missing_encoder_key_is_named(tiny_distilbert_dir, tmp_path):
    broken = copy_checkpoint(tiny_distilbert_dir, tmp_path / "broken")
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["distilbert.transformer.layer.1.ffn.lin2.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing encoder weights distilbert\.transformer\.layer\.1\.ffn\.lin2\.weight"):
        load_model(broken)


def test_unexpected_keys_are_warned_and_reported(tiny_bert_dir, tmp_path):
    odd = copy_checkpoint(tiny_bert_dir, tmp_path / "odd")
    tensors = load_file(str(odd / "model.safetensors"))
    tensors["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    tensors["classifier.weight"] = torch.zeros(2, 32)
    save_file(tensors, str(odd / "model.safetensors"))
    with pytest.warns(UserWarning, match="2 unexpected key"):
        model = load_model(odd)
    assert model.load_report.unexpected == ("bert.encoder.layer.0.attention.self.rotary.weight", "classifier.weight")


def test_shape_mismatch_and_bad_config_are_clear_errors(tiny_bert_dir, tmp_path):
    wrong = copy_checkpoint(tiny_bert_dir, tmp_path / "wrong")
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    with pytest.raises(CheckpointError, match=r"embeddings.word_embeddings.weight has shape \(30522, 32\)"):
        load_model(wrong)
    (wrong / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(CheckpointError, match=r"config.json: model_type 'roberta' is not supported"):
        load_model(wrong)
    (wrong / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_model(wrong)


# ----------------------------------------------------------------------------- real checkpoint

REAL_TEXT = [
    ("Where is the Eiffel Tower?",
     "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
     "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."),
    ("Who designed it?", "Gustave Eiffel's company designed the tower."),
]


def minilm_logits_vs_transformers(minilm_dir, pairs):
    from qa_core import load_tokenizer

    ours = load_model(minilm_dir).eval()
    encoder = transformers.AutoModel.from_pretrained(minilm_dir, attn_implementation="sdpa").eval()
    tokenizer = load_tokenizer(minilm_dir)
    tokenizer.enable_truncation(384, strategy="only_second")
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(pairs)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    types = torch.tensor([e.type_ids for e in encodings])
    with torch.no_grad():
        start, end = ours(ids, mask, types)
        hidden = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        expected = F.linear(hidden, ours.qa_outputs.weight, ours.qa_outputs.bias)
    return (start, end), (expected[..., 0], expected[..., 1]), mask


def test_real_minilm_matches_transformers(minilm_dir):
    (start, end), (hf_start, hf_end), mask = minilm_logits_vs_transformers(minilm_dir, REAL_TEXT)
    assert not mask.all()  # the second pair is padded
    torch.testing.assert_close(start, hf_start, atol=LOGIT_TOL, rtol=0)
    torch.testing.assert_close(end, hf_end, atol=LOGIT_TOL, rtol=0)


def test_real_minilm_matches_transformers_on_xquad(minilm_dir, xquad_path):
    data = json.loads(xquad_path.read_text(encoding="utf-8"))["data"]
    pairs = [(qa["question"], paragraph["context"])
             for article in data[:2] for paragraph in article["paragraphs"][:2] for qa in paragraph["qas"][:1]]
    (start, end), (hf_start, hf_end), _ = minilm_logits_vs_transformers(minilm_dir, pairs)
    torch.testing.assert_close(start, hf_start, atol=LOGIT_TOL, rtol=0)
    torch.testing.assert_close(end, hf_end, atol=LOGIT_TOL, rtol=0)


# ----------------------------------------------------------------------------- dropout

@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
def test_dropout_overrides_reach_every_module(model_type, tiny_distilbert_dir, tiny_bert_dir):
    src = tiny_distilbert_dir if model_type == "distilbert" else tiny_bert_dir
    requested = {"hidden": 0.3, "attention": 0.25, "head": 0.15}
    model = load_model(src, dropout=requested)
    by_kind: dict[str, list[float]] = {"hidden": [], "attention": [], "head": []}
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            assert isinstance(module, Dropout), "every dropout module has a kind"
            by_kind[module.kind].append(module.p)
    layers = model.config.num_layers
    # BERT also drops out after the attention projection; DistilBERT does not (as in transformers).
    hidden_count = 1 + (2 if model_type == "bert" else 1) * layers
    assert by_kind == {"hidden": [0.3] * hidden_count, "attention": [0.25] * layers, "head": [0.15]}
    assert model.dropout_report() == requested
    partial = load_model(src, dropout={"attention": 0.0})
    default_head = 0.1 if model_type == "distilbert" else 0.0
    assert partial.dropout_report() == {"hidden": 0.1, "attention": 0.0, "head": default_head}


def test_attention_dropout_really_applies_in_training_only(tiny_distilbert_dir):
    ids, mask, _, _, _ = make_batch(2, 24, seed=8, token_types=False)
    only_attention = load_model(tiny_distilbert_dir, dropout={"hidden": 0.0, "attention": 0.5, "head": 0.0})
    none = load_model(tiny_distilbert_dir, dropout={"hidden": 0.0, "attention": 0.0, "head": 0.0})
    with torch.no_grad():
        only_attention.train()
        assert not torch.equal(only_attention(ids, mask)[0], only_attention(ids, mask)[0])
        none.train()
        assert torch.equal(none(ids, mask)[0], none(ids, mask)[0])
        only_attention.eval()
        none.eval()
        torch.testing.assert_close(only_attention(ids, mask)[0], none(ids, mask)[0], atol=0, rtol=0)


def test_bad_dropout_overrides_are_rejected(tiny_distilbert_dir):
    with pytest.raises(ValueError, match="unknown dropout kind"):
        load_model(tiny_distilbert_dir, dropout={"hiden": 0.1})
    with pytest.raises(ValueError, match=r"dropout\['head'\] = 1.5"):
        load_model(tiny_distilbert_dir, dropout={"head": 1.5})


# ----------------------------------------------------------------------------- contract

@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
def test_model_contract_attributes(model_type, tiny_distilbert_dir, tiny_bert_dir):
    src = tiny_distilbert_dir if model_type == "distilbert" else tiny_bert_dir
    model = load_model(src)
    assert isinstance(model.config, EncoderConfig)
    assert model.config.model_type == model_type and model.config.num_layers == 2
    assert model.uses_token_type_ids is (model_type == "bert")
    assert isinstance(model.layers, torch.nn.ModuleList) and len(model.layers) == 2
    assert isinstance(model.embeddings, torch.nn.Module)
    assert (model.qa_outputs.in_features, model.qa_outputs.out_features) == (32, 2)
    assert model.source_dir == src.resolve()
    # Every parameter belongs to embeddings, a layer or the head (layer-wise LR decay relies on it).
    owned = {id(p) for part in (model.embeddings, *model.layers, model.qa_outputs) for p in part.parameters()}
    assert owned == {id(p) for p in model.parameters()}


# ----------------------------------------------------------------------------- attention dropout (CPU path)

def reference_dropout_attention(q, k, v, dropout_p, key_mask, drop_mask):
    """The textbook formula, one op at a time, with the same drop mask."""
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    return (scores.softmax(-1) * (~drop_mask) / (1 - dropout_p)) @ v


@pytest.mark.parametrize("route", ["no_mask", "key_mask", "key_lengths"])
def test_dropout_attention_equals_reference_with_the_same_mask(route):
    g = torch.Generator().manual_seed(3)
    batch, heads, seq, dim, p = 3, 2, 11, 4, 0.3
    q, k, v = (torch.randn(batch, heads, seq, dim, generator=g, dtype=torch.float64).float().requires_grad_()
               for _ in range(3))
    lengths = [11, 6, 1]
    key_mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    drop = torch.rand(batch, heads, seq, seq, generator=g) < p
    kwargs = {"no_mask": {}, "key_mask": {"key_mask": key_mask},
              "key_lengths": {"key_mask": key_mask, "key_lengths": lengths}}[route]
    out = dropout_attention(q, k, v, p, drop_mask=drop, **kwargs)
    ref = reference_dropout_attention(q, k, v, p, kwargs.get("key_mask"), drop)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    upstream = torch.randn(out.shape, generator=g)
    ours = torch.autograd.grad(out, (q, k, v), upstream)
    theirs = torch.autograd.grad(ref, (q, k, v), upstream)
    for name, a, b in zip("qkv", ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m: f"grad {name}: {m}")
    if route != "no_mask":  # padded keys get no gradient at all
        assert not ours[1][2, :, 1:].any() and not ours[2][1, :, 6:].any()


@pytest.mark.parametrize("with_lengths", [False, True])
def test_dropout_attention_drops_each_probability_independently_and_rescales(with_lengths):
    # v = identity over keys makes the output the dropped, rescaled probability matrix itself.
    torch.manual_seed(0)
    heads, seq, p = 4, 64, 0.25
    q, k = torch.randn(1, heads, seq, seq), torch.randn(1, heads, seq, seq)
    v = torch.eye(seq).expand(1, heads, seq, seq)
    out = dropout_attention(q, k, v, p, key_lengths=[seq] if with_lengths else None)
    probs = (q @ k.transpose(-1, -2) / seq ** 0.5).softmax(-1)
    kept = out != 0
    torch.testing.assert_close(out[kept], probs[kept] / (1 - p), atol=1e-6, rtol=1e-5)
    n = kept.numel()
    dropped_fraction = 1 - kept.float().mean().item()
    assert abs(dropped_fraction - p) < 4 * (p * (1 - p) / n) ** 0.5   # 16384 Bernoulli draws
    assert not torch.equal(kept[0, 0], kept[0, 1])                    # heads draw their own masks


def test_training_with_attention_dropout_takes_the_lean_cpu_path(tiny_bert_dir, monkeypatch):
    import qa_core.modeling as modeling
    calls = []
    real = modeling.dropout_attention
    monkeypatch.setattr(modeling, "dropout_attention", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    model = load_model(tiny_bert_dir, dropout={"attention": 0.2}).train()
    ids, mask, types, start, end = make_batch(2, 16, seed=4)
    span_loss(*model(ids, mask, types), start, end).backward()
    assert len(calls) == model.config.num_layers
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        model.eval()(ids, mask, types)
    assert len(calls) == model.config.num_layers  # evaluation stays on SDPA's fused kernel


def test_masked_batches_on_cuda_avoid_cudnn_attention():
    """cuDNN attention rebuilds a graph per sequence length (9x slower on dynamically padded
    batches on an H100): masked CUDA batches allow memory-efficient and math SDPA only."""
    from qa_core.modeling import masked_attention_backends

    cuda = torch.device("cuda")
    before = (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled())
    with masked_attention_backends(cuda, masked=True):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert not torch.backends.cuda.flash_sdp_enabled()  # flash takes no mask anyway
        assert torch.backends.cuda.mem_efficient_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == before
    for device, masked in ((cuda, False), (torch.device("cpu"), True)):
        with masked_attention_backends(device, masked=masked):
            assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == before

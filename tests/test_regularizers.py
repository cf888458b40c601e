"""Overfitting levers: layer-wise LR decay, EMA, label smoothing, freezing, R-Drop."""
import math

import pytest
import torch

from qa_core import checkpoint as ckpt
from qa_core import loop
from qa_core.config import load_config
from qa_core.metrics import qa_loss
from qa_core.modeling import load_model
from qa_core.optim import parameter_groups
from qa_core.regularizers import EMA, freeze, rdrop_kl
from test_loop import tiny_overrides


def test_layerwise_lr_decay_multipliers(tiny_bert_dir):
    model = load_model(str(tiny_bert_dir))  # 2 layers
    groups = parameter_groups(model, weight_decay=0.01, lr=1e-3, layer_decay=0.5)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    expected = {"embeddings.": 0.125, "layers.0.": 0.25, "layers.1.": 0.5, "qa_outputs.": 1.0}
    assert set(lr_of) == {n for n, _ in model.named_parameters()}
    for name, lr in lr_of.items():
        prefix = next(p for p in expected if name.startswith(p))
        assert lr == pytest.approx(1e-3 * expected[prefix], rel=0, abs=1e-18), name
    # Decay split is kept inside every layer group.
    assert {(g["lr_multiplier"], g["weight_decay"]) for g in groups} == {
        (m, wd) for m in expected.values() for wd in (0.0, 0.01)}


def test_ema_equals_closed_form():
    model = torch.nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    ema, decay = EMA(model, 0.9), 0.9
    seen = []
    for k in range(1, 4):
        with torch.no_grad():
            model.weight.copy_(torch.full_like(model.weight, float(k)))
        seen.append(model.weight.detach().clone())
        ema.update(model)
    expected = decay ** 3 * w0 + (1 - decay) * (decay ** 2 * seen[0] + decay * seen[1] + seen[2])
    torch.testing.assert_close(ema.shadow["weight"], expected)
    ema.swap(model)
    torch.testing.assert_close(model.weight.detach(), expected)
    ema.swap(model)
    torch.testing.assert_close(model.weight.detach(), seen[2])


def test_label_smoothing_formula_on_hand_case():
    # One window of 3 real tokens + 1 padding position; target token 0; epsilon 0.1.
    start = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    end = torch.tensor([[0.0, 0.0, 0.0, -7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    z = math.exp(1) + math.exp(2) + math.exp(3)
    log_p = [1 - math.log(z), 2 - math.log(z), 3 - math.log(z)]
    start_loss = 0.9 * -log_p[0] + 0.1 * -sum(log_p) / 3
    end_loss = math.log(3)  # uniform over the 3 real tokens, whatever the target
    got = qa_loss(start, end, torch.tensor([0]), torch.tensor([2]), attention_mask=mask, label_smoothing=0.1)
    assert got.item() == pytest.approx((start_loss + end_loss) / 2, rel=1e-6)


def test_rdrop_kl_hand_case_and_zero_for_equal_passes():
    a = torch.tensor([[0.0, math.log(3.0), 9.0]])  # p = (1/4, 3/4) over 2 real tokens
    b = torch.tensor([[0.0, 0.0, -9.0]])  # q = (1/2, 1/2)
    mask = torch.tensor([[1, 1, 0]])
    kl_pq = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl_qp = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    sym = (kl_pq + kl_qp) / 2
    # Start differs, end identical -> (sym + 0) / 2.
    assert rdrop_kl(a, b, b, b, mask).item() == pytest.approx(sym / 2, rel=1e-6)
    assert rdrop_kl(a, a, a, a, mask).item() == 0.0


def test_freezing_keeps_weights_unchanged(tiny_bert_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_bert_dir, tmp_path, "frozen", "regularization.freeze_embeddings=true",
                                           "regularization.freeze_layers=1", "train.max_steps=3",
                                           "eval.at_start=false"))
    loop.seed_everything(42, False)
    before = load_model(str(tiny_bert_dir)).state_dict()
    loop.run(cfg)
    after = ckpt.load_latest_checkpoint(tmp_path / "runs" / "frozen")["model"]
    for name, value in after.items():
        if name.startswith(("embeddings.", "layers.0.")):
            assert torch.equal(value, before[name]), name
    assert not torch.equal(after["layers.1.output_norm.weight"], before["layers.1.output_norm.weight"])
    assert freeze(load_model(str(tiny_bert_dir)), embeddings=False, first_layers=0) == []


def test_ema_and_rdrop_and_llrd_run_in_the_loop(tiny_bert_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(
        tiny_bert_dir, tmp_path, "levers", "regularization.ema_decay=0.5", "regularization.rdrop_alpha=1.0",
        "regularization.layerwise_lr_decay=0.8", "regularization.label_smoothing=0.1",
        "model.dropout.hidden=0.2", "train.max_steps=3"))
    summary = loop.run(cfg)
    state = ckpt.load_latest_checkpoint(tmp_path / "runs" / "levers")
    shadow = state["ema"]["shadow"]
    # The average trails the weights: after 3 steps they differ, and evaluation used the average.
    assert any(not torch.equal(shadow[k], state["model"][k]) for k in shadow)
    assert summary["steps"] == 3

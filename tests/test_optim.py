import math

import pytest
import torch
from torch import nn

from qa_core.optim import build_optimizer, build_scheduler, lr_multiplier, parameter_groups, warmup_steps_for


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(4, 4)
        self.LayerNorm = nn.LayerNorm(4)
        self.emb = nn.Embedding(10, 4)


def test_no_decay_on_bias_and_layernorm():
    model = Block()
    groups = parameter_groups(model, weight_decay=0.01, lr=1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"])
    plain = sorted(names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"])
    assert decayed == ["dense.weight", "emb.weight"]
    assert plain == ["LayerNorm.bias", "LayerNorm.weight", "dense.bias"]


def test_weight_decay_is_decoupled():
    # With zero gradient, AdamW's update is exactly p *= (1 - lr * wd) for decayed params.
    model = Block()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(parameter_groups(model, 0.1, 0.5), lr=0.5, betas=(0.9, 0.999), eps=1e-8,
                          device=torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.5 * 0.1 if n in ("dense.weight", "emb.weight") else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor)


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_schedule_matches_formula(name):
    total, warmup, base = 100, 10, 2e-4
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=base)
    sched = build_scheduler(opt, name=name, total_steps=total, warmup_steps=warmup)
    seen = {}
    for step in range(total):
        seen[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert seen[0] == 0.0
    assert seen[5] == pytest.approx(base * 5 / 10)
    assert seen[10] == pytest.approx(base)
    progress = (60 - 10) / 90
    expected = {"linear": base * (1 - progress), "cosine": base * 0.5 * (1 + math.cos(math.pi * progress)),
                "constant": base}[name]
    assert seen[60] == pytest.approx(expected)
    assert seen[99] == pytest.approx({"linear": base / 90, "cosine": base * 0.5 * (1 + math.cos(math.pi * 89 / 90)),
                                      "constant": base}[name])


def test_warmup_ratio_and_steps():
    assert warmup_steps_for(100, 0, 0.1) == 10
    assert warmup_steps_for(100, 7, 0.1) == 7
    assert warmup_steps_for(95, 0, 0.1) == 10  # rounds up
    assert lr_multiplier(0, name="linear", total_steps=10, warmup_steps=0) == 1.0

"""Regularization levers the loop can switch on: freezing, an exponential moving average
of the weights, and R-Drop's consistency term. Each is off by default (see config.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def freeze(model: nn.Module, *, embeddings: bool, first_layers: int) -> list[str]:
    """Stop training the embeddings and/or the first k encoder layers; returns the frozen
    parameter names. Helps when the data is tiny: the lower layers hold general language
    knowledge that a few hundred questions can only damage."""
    frozen = []
    modules = ([("embeddings", model.embeddings)] if embeddings else []) + \
              [(f"layers.{i}", model.layers[i]) for i in range(first_layers)]
    for prefix, module in modules:
        for name, param in module.named_parameters():
            param.requires_grad_(False)
            frozen.append(f"{prefix}.{name}")
    return frozen


class EMA:
    """Exponential moving average of the trainable weights, updated after every optimizer
    step: ema <- decay * ema + (1 - decay) * weights. Evaluating (and saving) the average
    smooths out the last noisy steps; it helps most with small batches and high lr."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        names = list(self.shadow)
        params = dict(model.named_parameters())
        # lerp(ema, w, 1 - decay) == decay * ema + (1 - decay) * w, in one fused call.
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names], 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model: nn.Module) -> None:
        """Exchange the model's weights with the averaged ones (call twice to swap back)."""
        params = dict(model.named_parameters())
        for name, avg in self.shadow.items():
            current = params[name].detach().clone()
            params[name].copy_(avg)
            avg.copy_(current)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


def rdrop_kl(start_a: torch.Tensor, end_a: torch.Tensor, start_b: torch.Tensor, end_b: torch.Tensor,
             attention_mask: torch.Tensor) -> torch.Tensor:
    """R-Drop (Liang et al., 2021): the symmetric KL divergence between the start (and end)
    distributions of two forward passes with different dropout masks, summed over windows.

    Per window: (KL(a||b) + KL(b||a)) / 2 for start and for end, averaged over the two.
    Padding positions are excluded from both softmaxes, as in qa_loss."""
    real = attention_mask.bool()
    total = 0.0
    for a, b in ((start_a, start_b), (end_a, end_b)):
        log_a = F.log_softmax(a.float().masked_fill(~real, torch.finfo(torch.float32).min), dim=-1)
        log_b = F.log_softmax(b.float().masked_fill(~real, torch.finfo(torch.float32).min), dim=-1)
        kl_ab = (log_a.exp() * (log_a - log_b)).masked_fill(~real, 0.0).sum(-1)
        kl_ba = (log_b.exp() * (log_b - log_a)).masked_fill(~real, 0.0).sum(-1)
        total = total + (kl_ab + kl_ba) / 2
    return (total / 2).sum()

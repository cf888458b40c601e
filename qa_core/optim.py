"""AdamW with decoupled weight decay, parameter groups, and warmup schedules."""
from __future__ import annotations

import math

import torch
from torch import nn


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and LayerNorm weights are not decayed (decay would pull LayerNorm gains to 0).

    In BERT/DistilBERT these are exactly the 1-D parameters."""
    return param.ndim < 2


def parameter_groups(model: nn.Module, weight_decay: float, lr: float) -> list[dict]:
    decay, skip = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (skip if no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
              {"params": skip, "weight_decay": 0.0, "lr": lr}]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict], *, lr: float, betas: tuple[float, float], eps: float,
                    device: torch.device) -> torch.optim.AdamW:
    # torch.optim.AdamW applies weight decay decoupled from the gradient (Loshchilov & Hutter).
    # fused kernels exist on CUDA; on CPU the multi-tensor (foreach) path is the fast one.
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)


def warmup_steps_for(total_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    return warmup_steps if warmup_steps > 0 else int(math.ceil(warmup_ratio * total_steps))


def lr_multiplier(step: int, *, name: str, total_steps: int, warmup_steps: int) -> float:
    """The factor applied to the base learning rate before optimizer step `step` (0-based).

    linear:   warmup from 0 to 1, then straight down to 0 at total_steps.
    cosine:   warmup, then half a cosine from 1 to 0.
    constant: warmup, then 1."""
    if step < warmup_steps:
        return step / warmup_steps
    if name == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    if name == "linear":
        return 1.0 - progress
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {name!r}: use linear, cosine or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, *, name: str, total_steps: int,
                    warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, name=name, total_steps=total_steps, warmup_steps=warmup_steps))

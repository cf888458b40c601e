"""AdamW with decoupled weight decay, parameter groups, and warmup schedules."""
from __future__ import annotations

import math

import torch
from torch import nn


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and LayerNorm weights are not decayed (decay would pull LayerNorm gains to 0).

    In BERT/DistilBERT these are exactly the 1-D parameters."""
    return param.ndim < 2


def layer_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for encoder layer i, num_layers + 1 for the QA head."""
    if name.startswith("embeddings."):
        return 0
    if name.startswith("layers."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def layer_lr_multiplier(name: str, num_layers: int, layer_decay: float) -> float:
    """Layer-wise LR decay: the head trains at the full rate, each layer below it at
    `layer_decay` times the one above (the embeddings at layer_decay ** (num_layers + 1))."""
    return layer_decay ** (num_layers + 1 - layer_depth(name, num_layers))


def parameter_groups(model: nn.Module, weight_decay: float, lr: float, layer_decay: float = 1.0) -> list[dict]:
    """One group per (learning-rate multiplier, decayed or not); frozen parameters are left out."""
    num_layers = len(model.layers) if hasattr(model, "layers") else 0
    groups: dict[tuple[float, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        multiplier = layer_lr_multiplier(name, num_layers, layer_decay) if layer_decay != 1.0 else 1.0
        skip = no_decay(name, param)
        group = groups.setdefault((multiplier, skip), {
            "params": [], "names": [], "weight_decay": 0.0 if skip else weight_decay,
            "lr": lr * multiplier, "lr_multiplier": multiplier})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(groups: list[dict], *, lr: float, betas: tuple[float, float], eps: float,
                    device: torch.device) -> torch.optim.AdamW:
    # torch.optim.AdamW applies weight decay decoupled from the gradient (Loshchilov & Hutter).
    # The fused kernel, on CUDA and (torch >= 2.4) on CPU: one pass over each tensor, no
    # temporaries. MiniLM-sized AdamW step on 2 CPU threads: 9.5 ms fused vs 53 ms foreach.
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, ValueError):  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)


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

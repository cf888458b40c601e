"""A pure-PyTorch DistilBERT / BERT encoder with an extractive-QA span head.

Both families are the same post-LayerNorm transformer; they differ only in
  * token type embeddings (BERT has them, DistilBERT does not),
  * a dropout after the attention output projection (BERT only),
  * the QA head dropout (DistilBERT's `qa_dropout`; BERT's QA head has none by default),
  * names in config.json and in the checkpoint (see `checkpoint_names`).

Checkpoints are read and written with Hugging Face key names, so the weights move
freely between this model and `transformers`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qa_core import dropout as fast_dropout
from qa_core import cpu_matmul
from qa_core.cpu_matmul import Linear
from qa_core.hub import resolve_model_dir
from qa_core.tokenization import TOKENIZER_FILES

__all__ = ["EncoderConfig", "QAModel", "dropout_attention", "LoadReport", "CheckpointError", "load_model", "DROPOUT_KINDS"]

log = logging.getLogger(__name__)

DROPOUT_KINDS = ("hidden", "attention", "head")
CHECKPOINT_PREFIX = {"distilbert": "distilbert", "bert": "bert"}
QA_ARCHITECTURE = {"distilbert": "DistilBertForQuestionAnswering", "bert": "BertForQuestionAnswering"}
ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "relu": lambda: nn.ReLU(),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": lambda: nn.SiLU(),
    "swish": lambda: nn.SiLU(),
}


class CheckpointError(RuntimeError):
    """A checkpoint or its config.json cannot be loaded; the message names the file and the key."""


# --------------------------------------------------------------------------- config

@dataclass(frozen=True)
class EncoderConfig:
    model_type: str                  # "distilbert" or "bert"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 0         # 0: no token type embeddings (DistilBERT)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    head_dropout: float = 0.0
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    sinusoidal_positions: bool = False
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # The config.json this came from, so save_pretrained keeps fields we do not model.
    hf_config: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if self.model_type not in CHECKPOINT_PREFIX:
            raise ValueError(f"model_type {self.model_type!r} is not supported (supported: distilbert, bert)")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not supported ({', '.join(ACTIVATIONS)})")

    @property
    def uses_token_type_ids(self) -> bool:
        return self.type_vocab_size > 0

    @property
    def dropout_after_attention(self) -> bool:
        return self.model_type == "bert"

    def with_dropout(self, hidden: float | None = None, attention: float | None = None,
                     head: float | None = None) -> "EncoderConfig":
        changes = {"hidden_dropout": hidden, "attention_dropout": attention, "head_dropout": head}
        return dataclasses.replace(self, **{k: float(v) for k, v in changes.items() if v is not None})

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "EncoderConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: config.json not found; a model directory needs config.json "
                                  f"and model.safetensors") from None
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path}: not valid JSON ({error})") from None
        try:
            return cls.from_hf_dict(raw)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{path}: {error}") from None

    @classmethod
    def from_hf_dict(cls, raw: dict) -> "EncoderConfig":
        model_type = raw.get("model_type")
        if model_type == "distilbert":
            return cls(model_type="distilbert", vocab_size=raw.get("vocab_size", 30522),
                       hidden_size=raw.get("dim", 768), num_layers=raw.get("n_layers", 6),
                       num_heads=raw.get("n_heads", 12), intermediate_size=raw.get("hidden_dim", 3072),
                       max_position_embeddings=raw.get("max_position_embeddings", 512), type_vocab_size=0,
                       hidden_dropout=raw.get("dropout", 0.1),
                       attention_dropout=raw.get("attention_dropout", 0.1),
                       head_dropout=raw.get("qa_dropout", 0.1), activation=raw.get("activation", "gelu"),
                       layer_norm_eps=1e-12,  # fixed in DistilBERT, not a config field
                       sinusoidal_positions=bool(raw.get("sinusoidal_pos_embds", False)),
                       pad_token_id=raw.get("pad_token_id", 0) or 0,
                       initializer_range=raw.get("initializer_range", 0.02), hf_config=dict(raw))
        if model_type == "bert":
            position_type = raw.get("position_embedding_type", "absolute")
            if position_type != "absolute":
                raise ValueError(f"position_embedding_type {position_type!r} is not supported (only absolute)")
            return cls(model_type="bert", vocab_size=raw.get("vocab_size", 30522),
                       hidden_size=raw.get("hidden_size", 768), num_layers=raw.get("num_hidden_layers", 12),
                       num_heads=raw.get("num_attention_heads", 12),
                       intermediate_size=raw.get("intermediate_size", 3072),
                       max_position_embeddings=raw.get("max_position_embeddings", 512),
                       type_vocab_size=raw.get("type_vocab_size", 2),
                       hidden_dropout=raw.get("hidden_dropout_prob", 0.1),
                       attention_dropout=raw.get("attention_probs_dropout_prob", 0.1),
                       # transformers' BertForQuestionAnswering has no head dropout; qa_dropout is ours.
                       head_dropout=raw.get("qa_dropout", 0.0), activation=raw.get("hidden_act", "gelu"),
                       layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
                       pad_token_id=raw.get("pad_token_id", 0) or 0,
                       initializer_range=raw.get("initializer_range", 0.02), hf_config=dict(raw))
        raise ValueError(f"model_type {model_type!r} is not supported (supported: distilbert, bert)")

    def to_hf_dict(self) -> dict:
        """config.json for transformers' *ForQuestionAnswering class of this family."""
        out = dict(self.hf_config)
        # Labels of a classifier checkpoint would resize transformers' QA head; dtype is ours (fp32).
        for stale in ("id2label", "label2id", "num_labels", "torch_dtype", "dtype", "_name_or_path"):
            out.pop(stale, None)
        out.update(model_type=self.model_type, architectures=[QA_ARCHITECTURE[self.model_type]],
                   vocab_size=self.vocab_size, max_position_embeddings=self.max_position_embeddings,
                   pad_token_id=self.pad_token_id, initializer_range=self.initializer_range)
        if self.model_type == "distilbert":
            out.update(dim=self.hidden_size, n_layers=self.num_layers, n_heads=self.num_heads,
                       hidden_dim=self.intermediate_size, dropout=self.hidden_dropout,
                       attention_dropout=self.attention_dropout, qa_dropout=self.head_dropout,
                       activation=self.activation, sinusoidal_pos_embds=self.sinusoidal_positions)
        else:
            out.update(hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                       num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
                       hidden_dropout_prob=self.hidden_dropout,
                       attention_probs_dropout_prob=self.attention_dropout, qa_dropout=self.head_dropout,
                       hidden_act=self.activation, layer_norm_eps=self.layer_norm_eps,
                       type_vocab_size=self.type_vocab_size, position_embedding_type="absolute")
        return out


# --------------------------------------------------------------------------- modules

class Dropout(nn.Dropout):
    """nn.Dropout tagged with its kind ("hidden", "attention" or "head") for overrides and reports;
    on CPU its masks come from qa_core.dropout (torch's CPU bernoulli_ is single-threaded and slow)."""

    def __init__(self, p: float, kind: str):
        super().__init__(p)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, kind={self.kind}"


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.uses_token_type_ids else None)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout, "hidden")

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}")
        x = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:
            # Without ids every token is type 0: add that row instead of gathering zeros.
            x = x + (self.token_type_embeddings.weight[0] if token_type_ids is None
                     else self.token_type_embeddings(token_type_ids))
        # Positions are 0..S-1 for every row, so a slice replaces the lookup.
        x = x + self.position_embeddings.weight[:seq_len]
        return self.dropout(self.layer_norm(x))


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        # q, k and v in one matmul; the checkpoint mapping splits/joins them.
        self.qkv = Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = Linear(config.hidden_size, config.hidden_size)
        # Holds the attention-probability dropout rate (used by SDPA or, on CPU, dropout_attention).
        self.dropout = Dropout(config.attention_dropout, "attention")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                key_lengths: list[int] | None = None) -> torch.Tensor:
        batch, seq_len, hidden = x.shape
        q, k, v = (self.qkv(x).view(batch, seq_len, 3, self.num_heads, self.head_dim)
                   .permute(2, 0, 3, 1, 4).unbind(0))
        dropout_p = self.dropout.p if self.training else 0.0
        if dropout_p > 0 and q.device.type == "cpu" and q.dtype == torch.float32 and torch.is_grad_enabled():
            # SDPA's CPU flash kernel has no dropout, and its math fallback keeps fp32 scores,
            # probabilities and dropped probabilities for backward: ours keeps probabilities + a bool mask.
            context = dropout_attention(q, k, v, dropout_p, key_mask=mask, key_lengths=key_lengths)
        elif key_lengths is not None:
            # Right-padded batch on single-threaded CPU: each sequence attends over its real keys
            # only (padded keys would get exactly zero weight). 4-D slices, because SDPA's fused CPU
            # kernel refuses 3-D input and the math fallback is ~2x slower. Padded queries are kept.
            context = torch.cat([
                F.scaled_dot_product_attention(q[i:i + 1], k[i:i + 1, :, :n], v[i:i + 1, :, :n],
                                               dropout_p=dropout_p)
                for i, n in enumerate(key_lengths)])
        else:
            # A boolean [B, 1, 1, S] mask still takes the fused CPU kernel (measured: 4.7x the math path).
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return self.out(context.transpose(1, 2).reshape(batch, seq_len, hidden))


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, *,
                      key_mask: torch.Tensor | None = None, key_lengths: list[int] | None = None,
                      drop_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) over allowed keys), dropout with keep-scaling 1/(1-p), @ v.

    q, k, v: [B, H, S, d]. key_mask: bool [B, 1, 1, S], True = attend. key_lengths: the real
    (right-padded) key count per sequence; then each sequence is computed on its own over
    those keys (fastest on one thread). drop_mask: bool [B, H, S, S], True = dropped; drawn
    as independent Bernoulli(p) per element when None (tests pass one to compare)."""
    if not 0.0 < dropout_p < 1.0:
        raise ValueError(f"dropout_p = {dropout_p!r}: must be in (0, 1)")
    if key_lengths is not None:
        drops = None if drop_mask is None else [drop_mask[i, :, :, :n] for i, n in enumerate(key_lengths)]
        return _SequenceDropoutAttention.apply(q, k, v, key_lengths, drops, dropout_p)
    if drop_mask is None:
        drop_mask = fast_dropout.bernoulli_mask(q.shape[:-1] + (k.shape[-2],), dropout_p, device=q.device)
    pad_bias = None
    if key_mask is not None:
        # An additive -inf row is cheaper than a broadcast masked_fill over [B, H, S, S].
        pad_bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(
            key_mask.logical_not(), float("-inf"))
    return _DropoutAttention.apply(q, k, v, pad_bias, drop_mask, dropout_p)


class _DropoutAttention(torch.autograd.Function):
    """Keeps q, k, v and the drop mask (bool) for backward and recomputes the probabilities
    there: 1 byte per score instead of the math SDPA's ~9, for one more q k^T and softmax per
    layer (MiniLM 16 x 384 step, 2 threads, paired A/B under load: 9.9 vs 11.0 CPU-s, peak RSS
    2241 vs 3787 MiB; the math SDPA spends more on its fp32 masks and copies). Scales are applied to the small [S, d] operands."""

    @staticmethod
    def forward(ctx, q, k, v, pad_bias, drop, dropout_p):
        scale, keep_scale = q.shape[-1] ** -0.5, 1.0 / (1.0 - dropout_p)
        q_scaled = q * scale
        probs = _probabilities(q_scaled, k, pad_bias, out=_scratch(0, drop.shape, q.dtype))
        out = torch.matmul(probs.masked_fill_(drop, 0.0), v).mul_(keep_scale)  # backward recomputes probs
        # q (a view into the qkv projection that k and v keep alive anyway), not q_scaled: no extra copy kept.
        ctx.save_for_backward(q, k, v, pad_bias, drop)
        ctx.scale, ctx.keep_scale = scale, keep_scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, pad_bias, drop = ctx.saved_tensors
        q_scaled = q * ctx.scale
        probs = _probabilities(q_scaled, k, pad_bias, out=_scratch(0, drop.shape, q_scaled.dtype))
        grad_q, grad_k, grad_v = _attention_backward(grad_out, q_scaled, k, v, probs, drop, probs_scratch=True)
        return (grad_q.mul_(ctx.scale * ctx.keep_scale), grad_k.mul_(ctx.keep_scale),
                grad_v.mul_(ctx.keep_scale), None, None, None)


_SCRATCH: dict[tuple[int, torch.dtype], torch.Tensor] = {}


def _scratch(slot: int, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """A reused CPU buffer for one [B, H, S, S] intermediate of _DropoutAttention (slots 0-2).

    Each fresh 80 MB tensor is a new mmap whose pages fault in on first write: QK^T for a
    16 x 12 x 330 x 330 batch took 35 ms into a new tensor and 15 ms into a reused one. The
    buffers never leave forward/backward (outputs and gradients are new tensors), and autograd
    runs one layer's backward at a time, so three slots serve every layer (they live as long
    as the process; at most 3 x B x H x S x S floats of the largest batch seen)."""
    numel = math.prod(shape)
    buffer = _SCRATCH.get((slot, dtype))
    if buffer is None or buffer.numel() < numel:
        _SCRATCH.pop((slot, dtype), None)
        buffer = _SCRATCH[(slot, dtype)] = torch.empty(numel, dtype=dtype)
    return buffer[:numel].view(shape)


def _probabilities(q_scaled, k, pad_bias, out=None):
    probs = torch.matmul(q_scaled, k.transpose(-1, -2), out=out)
    if pad_bias is not None:
        probs.add_(pad_bias)
    return torch._softmax(probs, -1, False, out=probs)  # in place: no second [B, H, S, S] buffer


class _SequenceDropoutAttention(torch.autograd.Function):
    """Per sequence over its first n keys (padded keys cost nothing). Keeps the probabilities,
    trimmed to the real keys, with the drop masks (5 bytes per real score); on one thread this
    matched the previous per-sequence SDPA's CPU time (6.1 vs 6.0 CPU-s per MiniLM 16 x 384 step)."""

    @staticmethod
    def forward(ctx, q, k, v, key_lengths, drops, dropout_p):
        scale, keep_scale = q.shape[-1] ** -0.5, 1.0 / (1.0 - dropout_p)
        q_scaled = q * scale
        out = torch.empty_like(q)
        saved = []
        for i, n in enumerate(key_lengths):
            probs = torch.matmul(q_scaled[i], k[i, :, :n].transpose(-1, -2))
            torch._softmax(probs, -1, False, out=probs)
            drop = drops[i] if drops is not None else fast_dropout.bernoulli_mask(probs.shape, dropout_p)
            torch.matmul(torch.where(drop, 0.0, probs), v[i, :, :n], out=out[i])
            saved += [probs, drop]
        ctx.save_for_backward(q_scaled, k, v, *saved)
        ctx.scale, ctx.keep_scale, ctx.key_lengths = scale, keep_scale, key_lengths
        return out.mul_(keep_scale)

    @staticmethod
    def backward(ctx, grad_out):
        q_scaled, k, v, *saved = ctx.saved_tensors
        grad_q, grad_k, grad_v = torch.empty_like(q_scaled), torch.zeros_like(k), torch.zeros_like(v)
        for i, n in enumerate(ctx.key_lengths):
            grad_q[i], grad_k[i, :, :n], grad_v[i, :, :n] = _attention_backward(
                grad_out[i], q_scaled[i], k[i, :, :n], v[i, :, :n], saved[2 * i], saved[2 * i + 1])
        return (grad_q.mul_(ctx.scale * ctx.keep_scale), grad_k.mul_(ctx.keep_scale),
                grad_v.mul_(ctx.keep_scale), None, None, None)


def _attention_backward(grad_out, q_scaled, k, v, probs, drop, *, probs_scratch: bool = False):
    """Gradients of (where(drop, 0, probs) @ v) w.r.t. q_scaled, k, v, before the constant scales.
    probs_scratch: probs is a recomputed scratch buffer (overwritten here) and the other
    [B, H, S, S] intermediates go to scratch buffers too."""
    if probs_scratch:
        grad_probs = torch.matmul(grad_out, v.transpose(-1, -2), out=_scratch(1, probs.shape, probs.dtype))
        grad_scores = torch.ops.aten._softmax_backward_data.out(
            grad_probs.masked_fill_(drop, 0.0), probs, -1, probs.dtype,
            grad_input=_scratch(2, probs.shape, probs.dtype))
    else:
        grad_probs = torch.matmul(grad_out, v.transpose(-1, -2)).masked_fill_(drop, 0.0)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
    del grad_probs
    dropped = probs.masked_fill_(drop, 0.0) if probs_scratch else torch.where(drop, 0.0, probs)
    grad_v = torch.matmul(dropped.transpose(-1, -2), grad_out)
    del dropped
    return torch.matmul(grad_scores, k), torch.matmul(grad_scores.transpose(-1, -2), q_scaled), grad_v


class TransformerBlock(nn.Module):
    """Post-LayerNorm block: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_output_dropout = (Dropout(config.hidden_dropout, "hidden")
                                         if config.dropout_after_attention else nn.Identity())
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.activation]()
        self.ffn_out = Linear(config.intermediate_size, config.hidden_size)
        self.ffn_dropout = Dropout(config.hidden_dropout, "hidden")
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                key_lengths: list[int] | None = None) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_output_dropout(self.attention(x, mask, key_lengths)))
        if isinstance(self.activation, nn.GELU):
            # One op for GELU + output projection: on CPU it keeps one intermediate tensor, not two.
            ffn = cpu_matmul.gelu_linear(self.ffn_in(x), self.ffn_out.weight, self.ffn_out.bias,
                                         self.activation.approximate)
        else:
            ffn = self.ffn_out(self.activation(self.ffn_in(x)))
        return self.output_norm(x + self.ffn_dropout(ffn))


@dataclass(frozen=True)
class LoadReport:
    """What load_model did with a checkpoint (Hugging Face key names throughout)."""
    source_dir: Path
    weights_files: tuple[Path, ...]
    layout: str                      # e.g. "DistilBertForMaskedLM", "BertModel (bare)"
    loaded: tuple[str, ...]          # checkpoint keys copied into the model
    fresh: tuple[str, ...]           # model parameters newly initialised (the QA head when absent)
    ignored: tuple[str, ...]         # known keys of other heads/buffers, deliberately not used
    unexpected: tuple[str, ...]      # unknown keys, not used

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {', '.join(str(f) for f in self.weights_files)} "
                 f"(layout: {self.layout})"]
        if self.fresh:
            lines.append(f"newly initialised (not in checkpoint): {', '.join(self.fresh)}")
        if self.ignored:
            lines.append(f"ignored (other heads / buffers): {', '.join(self.ignored)}")
        if self.unexpected:
            lines.append(f"UNEXPECTED keys, not used: {', '.join(self.unexpected)}")
        return "\n".join(lines)

    __str__ = summary


class QAModel(nn.Module):
    """Encoder + span head. forward(input_ids, attention_mask, token_type_ids=None) -> (start, end)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.head_dropout = Dropout(config.head_dropout, "head")
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.load_report: LoadReport | None = None
        self.source_dir: Path | None = None
        self.apply(self._init_weights)
        if config.sinusoidal_positions:
            self._make_sinusoidal_positions()

    @property
    def uses_token_type_ids(self) -> bool:
        return self.config.uses_token_type_ids

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        seq_len = input_ids.shape[1]
        width = cpu_matmul.padded_width(seq_len, input_ids.device, self.config.max_position_embeddings)
        if width != seq_len:
            # Extra padded positions (masked keys) for the CPU GEMM library: real positions get
            # the same values, and only their logits are returned.
            input_ids, attention_mask, token_type_ids = pad_inputs(
                width, input_ids, attention_mask, token_type_ids, self.config.pad_token_id)
        start_logits, end_logits = self._forward(input_ids, attention_mask, token_type_ids)
        if width != seq_len:
            start_logits, end_logits = start_logits[:, :seq_len], end_logits[:, :seq_len]
        return start_logits.contiguous(), end_logits.contiguous()

    def _forward(self, input_ids, attention_mask, token_type_ids):
        # No padding at all: no mask, which lets SDPA pick its fastest kernel.
        mask, key_lengths = None, None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()
            if use_per_sequence_attention(input_ids.device):
                key_lengths = right_padded_lengths(mask)
            mask = mask[:, None, None, :]  # [B, 1, 1, S]: True = attend to this key
        x = self.embeddings(input_ids, token_type_ids if self.uses_token_type_ids else None)
        with masked_attention_backends(input_ids.device, masked=mask is not None):
            for layer in self.layers:
                x = layer(x, mask, key_lengths)
        logits = self.qa_outputs(self.head_dropout(x))
        return logits.unbind(-1)

    # ----------------------------------------------------------------- dropout

    def set_dropout(self, *, hidden: float | None = None, attention: float | None = None,
                    head: float | None = None) -> None:
        """Set every dropout module of the given kinds (and the config that save_pretrained writes)."""
        requested = {"hidden": hidden, "attention": attention, "head": head}
        for kind, p in requested.items():
            if p is None:
                continue
            if not 0.0 <= float(p) < 1.0:
                raise ValueError(f"dropout[{kind!r}] = {p!r}: must be in [0, 1)")
            for module in self.modules():
                if isinstance(module, Dropout) and module.kind == kind:
                    module.p = float(p)
        self.config = self.config.with_dropout(hidden, attention, head)

    def dropout_report(self) -> dict[str, float]:
        """Effective dropout rate per kind, read from the modules themselves."""
        rates: dict[str, set[float]] = {kind: set() for kind in DROPOUT_KINDS}
        for module in self.modules():
            if isinstance(module, Dropout):
                rates[module.kind].add(module.p)
        report = {}
        for kind, values in rates.items():
            if len(values) > 1:
                raise RuntimeError(f"{kind} dropout modules disagree: {sorted(values)}; use set_dropout()")
            report[kind] = values.pop() if values else 0.0
        return report

    # ----------------------------------------------------------------- init

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _make_sinusoidal_positions(self) -> None:
        weight = self.embeddings.position_embeddings.weight
        n_pos, dim = weight.shape
        position = torch.arange(n_pos, dtype=torch.float64)[:, None]
        rate = torch.pow(10000.0, 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
        angles = position / rate
        with torch.no_grad():
            if weight.device.type != "meta":
                weight[:, 0::2] = torch.sin(angles[:, 0::2]).to(weight.dtype)
                weight[:, 1::2] = torch.cos(angles[:, 1::2]).to(weight.dtype)
        weight.requires_grad_(False)  # fixed, not learned (as in the DistilBERT paper)

    # ----------------------------------------------------------------- saving

    def state_dict_hf(self) -> dict[str, torch.Tensor]:
        """Weights under transformers' *ForQuestionAnswering key names (q/k/v split apart)."""
        ours = self.state_dict()
        prefix = CHECKPOINT_PREFIX[self.config.model_type] + "."
        out = {}
        for our_name, hf_names in checkpoint_names(self.config):
            tensor = ours[our_name].detach().to("cpu")
            full_names = [n if n.startswith("qa_outputs.") else prefix + n for n in hf_names]
            if len(full_names) == 1:
                out[full_names[0]] = tensor.contiguous()
            else:
                for name, part in zip(full_names, tensor.chunk(len(full_names), dim=0)):
                    out[name] = part.clone()  # safetensors refuses tensors that share storage
        return out

    def save_pretrained(self, out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> Path:
        """Write config.json, model.safetensors and the tokenizer files in Hugging Face layout."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        effective = self.dropout_report()
        config = self.config.with_dropout(effective["hidden"], effective["attention"], effective["head"])
        _write_atomically(out_dir / "config.json",
                          lambda tmp: tmp.write_text(json.dumps(config.to_hf_dict(), indent=2, sort_keys=True)
                                                     + "\n", encoding="utf-8"))
        _write_atomically(out_dir / "model.safetensors",
                          lambda tmp: save_file(self.state_dict_hf(), str(tmp), metadata={"format": "pt"}))
        self._copy_tokenizer_files(out_dir, tokenizer_dir)
        return out_dir

    def _copy_tokenizer_files(self, out_dir: Path, tokenizer_dir) -> None:
        source = Path(tokenizer_dir) if tokenizer_dir is not None else self.source_dir
        files = [source / n for n in TOKENIZER_FILES if (source / n).exists()] if source else []
        if not files:
            if tokenizer_dir is not None:
                raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
            warnings.warn(f"{out_dir}: saved without tokenizer files (the model has no source directory "
                          f"with them); pass tokenizer_dir=", stacklevel=3)
        for path in files:
            target = out_dir / path.name
            if not (target.exists() and target.samefile(path)):
                shutil.copyfile(path, target)


def use_per_sequence_attention(device: torch.device) -> bool:
    """Per-sequence attention over real keys pays off on single-threaded CPU only.

    Measured with benchmarks/model_speed.py-style runs (MiniLM, 384 tokens, ragged padding):
    1 thread: fwd+bwd 1.3x faster in fp32, 1.9x in bf16; 2 threads: its many small ops pay
    a thread fork/join each and it was 1.8x slower. GPUs prefer one batched masked kernel."""
    return device.type == "cpu" and torch.get_num_threads() == 1


def masked_attention_backends(device: torch.device, *, masked: bool):
    """SDPA backends for a padded (masked) batch on CUDA: memory-efficient, then math; not cuDNN.

    With a mask, torch 2.11 on an H100 picks cuDNN attention, which builds a graph for every new
    sequence length: dynamically padded batches (a new width almost every step) then trained at
    182 windows/s against 1589 with the memory-efficient kernel, and full 384-token batches at
    1713 (tools/gpu_varlen.sh, DistilBERT shape, bf16, batch 32). Unmasked batches keep torch's
    choice (flash), and CPU keeps its own kernels."""
    if not (masked and device.type == "cuda"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def pad_inputs(width: int, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               token_type_ids: torch.Tensor | None, pad_token_id: int):
    """The batch right-padded to `width` positions (pad tokens, mask 0, type 0)."""
    extra = width - input_ids.shape[1]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return (F.pad(input_ids, (0, extra), value=pad_token_id), F.pad(attention_mask, (0, extra), value=0),
            None if token_type_ids is None else F.pad(token_type_ids, (0, extra), value=0))


def right_padded_lengths(mask: torch.Tensor) -> list[int] | None:
    """Real lengths if every row of a [B, S] bool mask is ones-then-zeros (and non-empty), else None."""
    lengths = mask.sum(dim=1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, mask) or int(lengths.min()) == 0:
        return None
    return lengths.tolist()


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- checkpoint keys

def checkpoint_names(config: EncoderConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(our parameter name, its checkpoint names) pairs, checkpoint names without the model prefix.

    Several checkpoint names mean "concatenate along dim 0" (our fused qkv)."""
    if config.model_type == "distilbert":
        layer = "transformer.layer.{i}."
        names = {"attention.q": "attention.q_lin", "attention.k": "attention.k_lin",
                 "attention.v": "attention.v_lin", "attention.out": "attention.out_lin",
                 "attention_norm": "sa_layer_norm", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2",
                 "output_norm": "output_layer_norm"}
    else:
        layer = "encoder.layer.{i}."
        names = {"attention.q": "attention.self.query", "attention.k": "attention.self.key",
                 "attention.v": "attention.self.value", "attention.out": "attention.output.dense",
                 "attention_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
                 "ffn_out": "output.dense", "output_norm": "output.LayerNorm"}
    pairs = [("embeddings.word_embeddings.weight", ("embeddings.word_embeddings.weight",)),
             ("embeddings.position_embeddings.weight", ("embeddings.position_embeddings.weight",))]
    if config.uses_token_type_ids:
        pairs.append(("embeddings.token_type_embeddings.weight", ("embeddings.token_type_embeddings.weight",)))
    pairs += [(f"embeddings.layer_norm.{p}", (f"embeddings.LayerNorm.{p}",)) for p in ("weight", "bias")]
    for i in range(config.num_layers):
        hf = layer.format(i=i)
        for p in ("weight", "bias"):
            pairs.append((f"layers.{i}.attention.qkv.{p}",
                          tuple(f"{hf}{names[f'attention.{x}']}.{p}" for x in "qkv")))
            for ours in ("attention.out", "attention_norm", "ffn_in", "ffn_out", "output_norm"):
                pairs.append((f"layers.{i}.{ours}.{p}", (f"{hf}{names[ours]}.{p}",)))
    pairs += [(f"qa_outputs.{p}", (f"qa_outputs.{p}",)) for p in ("weight", "bias")]
    return pairs


# Keys of other heads and old buffers: known, deliberately not used (reported as "ignored").
IGNORED_KEY_PARTS = {
    "distilbert": ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "embeddings.position_ids"),
    "bert": ("cls.", "pooler.", "embeddings.position_ids", "embeddings.token_type_ids"),
}


def _is_ignored(key: str, model_type: str, prefix: str) -> bool:
    bare = key[len(prefix):] if key.startswith(prefix) else key
    return any(bare.startswith(part) for part in IGNORED_KEY_PARTS[model_type])


def _layout_name(config: EncoderConfig, keys: set[str], has_prefix: bool) -> str:
    family = "DistilBert" if config.model_type == "distilbert" else "Bert"
    if "qa_outputs.weight" in keys:
        return f"{family}ForQuestionAnswering"
    if any(k.startswith(("vocab_projector.", "vocab_transform.", "cls.predictions.")) for k in keys):
        return f"{family}ForMaskedLM"
    return f"{family}Model (bare)" if not has_prefix else f"{family} encoder with another head"


# --------------------------------------------------------------------------- reading weights

def _weights_files(model_dir: Path) -> list[Path]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (model_dir / single).exists():
            return [model_dir / single]
        if (model_dir / index_name).exists():
            index = json.loads((model_dir / index_name).read_text(encoding="utf-8"))
            return [model_dir / name for name in sorted(set(index["weight_map"].values()))]
    present = ", ".join(sorted(p.name for p in model_dir.iterdir())) or "nothing"
    raise CheckpointError(f"{model_dir}: no model.safetensors or pytorch_model.bin (found: {present})")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # Never unpickle arbitrary objects from a downloaded file.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        raise CheckpointError(f"{path}: cannot be read safely with torch.load(weights_only=True) "
                              f"({type(error).__name__}: {error}); convert it to safetensors") from None


def read_checkpoint(model_dir: Path) -> tuple[dict[str, torch.Tensor], tuple[Path, ...]]:
    files = _weights_files(model_dir)
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        for key, value in _read_tensors(path).items():
            # Very old checkpoints name LayerNorm parameters gamma/beta.
            key = key[:-6] + ".weight" if key.endswith(".gamma") else key
            key = key[:-5] + ".bias" if key.endswith(".beta") else key
            tensors[key] = value
    return tensors, tuple(files)


def map_checkpoint(config: EncoderConfig, tensors: dict[str, torch.Tensor],
                   source: str) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, ...]]]:
    """Our state dict from checkpoint tensors, plus the key bookkeeping for the LoadReport.

    Returns (state, info) where state lacks the QA head if the checkpoint has none."""
    prefix = CHECKPOINT_PREFIX[config.model_type] + "."
    has_prefix = any(k.startswith(prefix) for k in tensors)
    encoder_prefix = prefix if has_prefix else ""
    state: dict[str, torch.Tensor] = {}
    used: list[str] = []
    missing: list[str] = []
    fresh: list[str] = []
    for our_name, hf_names in checkpoint_names(config):
        is_head = our_name.startswith("qa_outputs.")
        full = [n if is_head else encoder_prefix + n for n in hf_names]
        absent = [n for n in full if n not in tensors]
        if absent:
            (fresh if is_head else missing).extend([our_name] if is_head else absent)
            continue
        parts = [tensors[n].to(torch.float32) for n in full]
        state[our_name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        used.extend(full)
    if missing:
        raise CheckpointError(f"{source}: missing encoder weights {', '.join(missing)} "
                              f"(layout: {_layout_name(config, set(tensors), has_prefix)}); "
                              f"the checkpoint does not match its config.json")
    if fresh and len(fresh) != 2:
        raise CheckpointError(f"{source}: QA head is incomplete (has only one of qa_outputs.weight/bias)")
    leftover = sorted(set(tensors) - set(used))
    ignored = tuple(k for k in leftover if _is_ignored(k, config.model_type, prefix))
    unexpected = tuple(k for k in leftover if k not in ignored)
    info = {"loaded": tuple(used), "fresh": tuple(fresh), "ignored": ignored, "unexpected": unexpected,
            "layout": (_layout_name(config, set(tensors), has_prefix),)}
    return state, info


# --------------------------------------------------------------------------- entry point

def load_model(ref: str | os.PathLike, *, dropout: dict[str, float] | None = None, revision: str | None = None,
               cache_dir: str | os.PathLike | None = None, token: str | bool | None = None) -> QAModel:
    """Load a QA model from a local dir, ``pkg:<package>/<subdir>`` or Hub id.

    dropout: {"hidden": p, "attention": p, "head": p}, each optional; applied to every
    dropout module of that kind. A checkpoint without QA head gets a fresh one
    (see `model.load_report`)."""
    dropout = dict(dropout or {})
    unknown = set(dropout) - set(DROPOUT_KINDS)
    if unknown:
        raise ValueError(f"unknown dropout kind(s) {sorted(unknown)}; use {list(DROPOUT_KINDS)}")
    model_dir = resolve_model_dir(ref, revision=revision, cache_dir=cache_dir, token=token)
    config = EncoderConfig.from_file(model_dir / "config.json")
    tensors, files = read_checkpoint(model_dir)
    source = ", ".join(str(f) for f in files)
    state, info = map_checkpoint(config, tensors, source)
    del tensors

    # Build on the meta device and adopt the loaded tensors: no wasted random init.
    with torch.device("meta"):
        model = QAModel(config)
    if info["fresh"]:
        state.update(_fresh_head(config))
    for name, tensor in state.items():
        expected = model.get_parameter(name).shape
        if tensor.shape != expected:
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensor.shape)}, config.json implies "
                                  f"{tuple(expected)}")
    model.load_state_dict(state, assign=True, strict=True)
    if config.sinusoidal_positions:
        model.embeddings.position_embeddings.weight.requires_grad_(False)
    model.set_dropout(**dropout)

    model.source_dir = model_dir
    model.load_report = LoadReport(source_dir=model_dir, weights_files=files, layout=info["layout"][0],
                                   loaded=info["loaded"], fresh=info["fresh"], ignored=info["ignored"],
                                   unexpected=info["unexpected"])
    if info["unexpected"]:
        warnings.warn(f"{source}: {len(info['unexpected'])} unexpected key(s) not used by the model: "
                      f"{', '.join(info['unexpected'])}", stacklevel=2)
    if info["fresh"]:
        log.info("%s has no QA head: initialised qa_outputs fresh (train before use)", source)
    return model


def _fresh_head(config: EncoderConfig) -> dict[str, torch.Tensor]:
    weight = torch.empty(2, config.hidden_size)
    nn.init.normal_(weight, mean=0.0, std=config.initializer_range)
    return {"qa_outputs.weight": weight, "qa_outputs.bias": torch.zeros(2)}

"""fp32 linear layers through oneDNN on CPU, forward and backward.

torch sends an fp32 `F.linear` on CPU to MKL's sgemm. On the AMD EPYC of the development
machine MKL does not take its AVX-512 path: a MiniLM feed-forward GEMM (5280 x 384 x 1536)
ran at 165-200 GFLOP/s there, and the same product through oneDNN (bundled with torch,
`torch.ops.mkldnn._linear_pointwise`) at 410-450 GFLOP/s forward and for the input gradient,
260-310 for the weight gradient. Same fp32 arithmetic, another summation order: results
differ from MKL's by float rounding only (tests/test_cpu_matmul.py).

`linear(x, weight, bias)` uses it for fp32 CPU tensors outside autocast when oneDNN is
available and enabled (`set_enabled`, or QA_CORE_CPU_MATMUL=torch in the environment to
turn it off); everything else goes to F.linear.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

_enabled = os.environ.get("QA_CORE_CPU_MATMUL", "onednn").lower() != "torch"


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def set_enabled(enabled: bool) -> None:
    """Turn the oneDNN path on or off for this process (off: every linear is F.linear)."""
    global _enabled
    _enabled = bool(enabled)


def enabled() -> bool:
    return _enabled and available()


# oneDNN builds (JIT-compiles) and caches one primitive per GEMM shape: with dynamically padded
# batches nearly every sequence length was new, a MiniLM run's peak RSS grew by ~650 MiB and each
# new shape cost a compilation. On the oneDNN path the model pads widths to a multiple of this
# (12 shapes up to 384 tokens); padded positions are masked keys and their logits are dropped.
WIDTH_MULTIPLE = 32


def padded_width(seq_len: int, device: torch.device, max_positions: int) -> int:
    """The width the model runs a batch of seq_len positions at (seq_len off the oneDNN path)."""
    if device.type != "cpu" or not enabled() or torch.is_autocast_enabled("cpu"):
        return seq_len
    width = -(-seq_len // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    return width if width <= max_positions else seq_len


def _mm_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) for 2-D a [M, K], b [N, K], by oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """linear(x) or, with `gelu` set ("none" / "tanh"), linear(gelu(x)). Keeps only x: with GELU,
    backward recomputes gelu(x) (one cheap elementwise pass) instead of keeping a second
    [tokens, intermediate] tensor alive per layer."""

    @staticmethod
    def forward(ctx, x, weight, bias, gelu):
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias, ctx.input_shape, ctx.gelu = bias is not None, x.shape, gelu
        a2 = x2 if gelu is None else F.gelu(x2, approximate=gelu)
        return _mm_t(a2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        x2, weight = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            a2 = x2 if ctx.gelu is None else F.gelu(x2, approximate=ctx.gelu)
            grad_w = _mm_t(g2.t(), a2.t())
        if ctx.needs_input_grad[0]:
            grad_x = _mm_t(g2, weight.t())
            if ctx.gelu is not None:
                grad_x = torch.ops.aten.gelu_backward(grad_x, x2, approximate=ctx.gelu)
            grad_x = grad_x.view(ctx.input_shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, None


def _on_onednn_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() >= 2 and enabled() and not torch.is_autocast_enabled("cpu"))


def gelu_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none"):
    """F.linear(F.gelu(h, approximate), weight, bias); on the oneDNN path it keeps only h for backward."""
    if _on_onednn_path(h, weight):
        return _OneDNNLinear.apply(h, weight, bias, approximate)
    return F.linear(F.gelu(h, approximate=approximate), weight, bias)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, by oneDNN for fp32 CPU tensors outside autocast."""
    if _on_onednn_path(x, weight):
        return _OneDNNLinear.apply(x, weight, bias, None)
    return F.linear(x, weight, bias)


class Linear(torch.nn.Linear):
    """nn.Linear whose forward is `linear` above (same parameters, same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

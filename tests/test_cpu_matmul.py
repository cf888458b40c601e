"""qa_core.cpu_matmul: fp32 linear layers through oneDNN on CPU give F.linear's results (up to
float rounding) and gradients, and step aside under autocast, for other dtypes, or when off."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qa_core import cpu_matmul

pytestmark = pytest.mark.skipif(not cpu_matmul.available(), reason="this torch build has no oneDNN linear")


@pytest.fixture
def onednn_on():
    before = cpu_matmul._enabled
    cpu_matmul.set_enabled(True)
    yield
    cpu_matmul.set_enabled(before)


@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_match_f_linear(onednn_on, bias):
    torch.manual_seed(0)
    x = torch.randn(3, 70, 48, requires_grad=True)
    w = torch.randn(96, 48, requires_grad=True)
    b = torch.randn(96, requires_grad=True) if bias else None
    grad = torch.randn(3, 70, 96)
    out = cpu_matmul.linear(x, w, b)
    assert out.grad_fn is not None and "OneDNN" in type(out.grad_fn).__name__  # really the oneDNN path
    grads = torch.autograd.grad(out, [x, w] + ([b] if bias else []), grad)
    ref = F.linear(x.double(), w.double(), b.double() if bias else None)
    ref_grads = torch.autograd.grad(ref, [x, w] + ([b] if bias else []), grad.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, ref_grads):
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-3)


def test_non_contiguous_input_and_only_weight_gradient(onednn_on):
    torch.manual_seed(1)
    x = torch.randn(40, 2, 32).transpose(0, 1)  # [2, 40, 32], not contiguous, no grad
    w = torch.randn(16, 32, requires_grad=True)
    out = cpu_matmul.linear(x, w)
    (grad_w,) = torch.autograd.grad(out.sum(), [w])
    torch.testing.assert_close(out, F.linear(x, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_w, torch.ones(2, 40, 16).reshape(-1, 16).t() @ x.reshape(-1, 32),
                               rtol=1e-5, atol=1e-4)


def test_steps_aside_when_off_for_other_dtypes_and_under_autocast(onednn_on):
    torch.manual_seed(2)
    x, w, b = torch.randn(5, 8), torch.randn(4, 8), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpu_matmul.linear(x, w, b).dtype == torch.bfloat16  # autocast's bf16 F.linear
    assert torch.equal(cpu_matmul.linear(x.double(), w.double()), F.linear(x.double(), w.double()))
    cpu_matmul.set_enabled(False)
    assert not cpu_matmul.enabled()
    assert torch.equal(cpu_matmul.linear(x, w, b), F.linear(x, w, b))


def test_qa_model_gives_the_same_logits_and_gradients_either_way(tiny_bert_dir):
    from qa_core.modeling import load_model

    model = load_model(tiny_bert_dir)
    model.train()
    model.set_dropout(hidden=0.0, attention=0.0)
    ids = torch.randint(1000, 2000, (3, 40))
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[1, 30:] = 0
    results = []
    for on in (True, False):
        cpu_matmul.set_enabled(on)
        try:
            start, end = model(ids, mask)
            grads = torch.autograd.grad((start.logsumexp(-1) + end[:, 3]).sum(), list(model.parameters()))
        finally:
            cpu_matmul.set_enabled(True)
        results.append((start, end, grads))
    (s1, e1, g1), (s0, e0, g0) = results
    torch.testing.assert_close(s1, s0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e1, e0, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_linear_matches_and_keeps_only_its_input(onednn_on, approximate):
    torch.manual_seed(3)
    h = torch.randn(2, 30, 64, requires_grad=True)
    w = torch.randn(16, 64, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    grad = torch.randn(2, 30, 16)
    out = cpu_matmul.gelu_linear(h, w, b, approximate)
    saved = [t for t in out.grad_fn.saved_tensors]
    assert sum(t.numel() for t in saved) == h.numel() + w.numel()  # h and the weight, no GELU output
    got = torch.autograd.grad(out, [h, w, b], grad)
    ref = F.linear(F.gelu(h.double(), approximate=approximate), w.double(), b.double())
    want = torch.autograd.grad(ref, [h, w, b], grad.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    for g, r in zip(got, want):
        torch.testing.assert_close(g.double(), r.double(), rtol=1e-5, atol=1e-3)

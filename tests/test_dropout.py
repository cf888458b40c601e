"""qa_core.dropout: fast CPU Bernoulli masks (right rate, independent, reproducible from torch's
RNG for any thread count) and the mask-based dropout built on them."""
from __future__ import annotations

import pytest
import torch

from qa_core.dropout import CHUNK, bernoulli_mask, dropout


def test_mask_rate_matches_p_and_extremes_are_exact():
    torch.manual_seed(0)
    for p in (0.1, 0.5, 0.9):
        mask = bernoulli_mask((3, 1000, 1000), p)
        assert mask.dtype == torch.bool and mask.shape == (3, 1000, 1000)
        # 3e6 draws: one standard deviation is at most 2.9e-4; allow ~3.5 of them.
        assert abs(mask.float().mean().item() - p) < 1e-3, p
    assert not bernoulli_mask((5, 7), 0.0).any()
    assert bernoulli_mask((5, 7), 1.0).all()
    with pytest.raises(ValueError, match="must be in"):
        bernoulli_mask((2,), 1.5)


def test_mask_elements_and_chunks_are_independent():
    torch.manual_seed(1)
    mask = bernoulli_mask((3 * CHUNK,), 0.3).float()
    # Neighbours uncorrelated (a generator reused per element pair would show here).
    a, b = mask[:-1] - 0.3, mask[1:] - 0.3
    assert abs((a * b).mean().item()) / 0.21 < 0.01
    # Chunks are drawn from different seeds: two chunks agree where independent draws would.
    same = (mask[:CHUNK] == mask[CHUNK:2 * CHUNK]).float().mean().item()
    assert abs(same - (1 - 2 * 0.3 * 0.7)) < 0.005


def test_masks_follow_torch_seed_and_ignore_thread_count():
    threads = torch.get_num_threads()
    try:
        masks = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            torch.manual_seed(7)
            masks.append(bernoulli_mask((2, CHUNK + 5), 0.25))
        assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])
    finally:
        torch.set_num_threads(threads)
    torch.manual_seed(7)
    first, second = bernoulli_mask((1000,), 0.25), bernoulli_mask((1000,), 0.25)
    assert not torch.equal(first, second)  # successive calls draw fresh masks
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(123)
    assert torch.equal(bernoulli_mask((1000,), 0.25, generator=generator), first)


def test_dropout_zeroes_the_mask_scales_the_rest_and_backpropagates_the_same():
    torch.manual_seed(3)
    x = (torch.rand(64, 50) + 0.5).requires_grad_()
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0, training=True) is x
    torch.manual_seed(4)
    out = dropout(x, 0.2, training=True)
    kept = out != 0
    assert 0.7 < kept.float().mean().item() < 0.9
    torch.testing.assert_close(out[kept], x.detach()[kept] / 0.8)
    weights = torch.randn(64, 50)
    (out * weights).sum().backward()
    torch.testing.assert_close(x.grad, torch.where(kept, weights / 0.8, 0.0))
    torch.manual_seed(4)
    assert torch.equal(dropout(x.detach(), 0.2, training=True), out.detach())  # same seed, same mask

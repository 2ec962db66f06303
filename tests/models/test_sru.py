"""The fast BiSRU against the step-by-step reference, and the linear scan's gradients."""

from __future__ import annotations

import pytest
import torch

from kdsed.models.sru import BiSRU, linear_scan, sru_reference


def _loop_scan(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    c, out = torch.zeros_like(u[0]), []
    for t in range(a.shape[0]):
        c = a[t] * c + u[t]
        out.append(c)
    return torch.stack(out)


def test_linear_scan_matches_loop_and_gradcheck() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(9, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    u = torch.randn(9, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(linear_scan(a, u), _loop_scan(a, u), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(linear_scan, (a, u))


@pytest.mark.parametrize("input_size", [8, 6], ids=["identity_skip", "projected_skip"])
@pytest.mark.parametrize("lengths", [None, [12, 7, 1]], ids=["full", "padded"])
def test_bisru_matches_reference_values_and_gradients(input_size: int, lengths: list[int] | None) -> None:
    torch.manual_seed(1)
    sru = BiSRU(input_size, hidden_size=4)
    with torch.no_grad():
        sru.bias.normal_()  # non-zero biases so a mixed-up gate or direction shows
    assert sru.projects_skip == (input_size != 8)
    x = torch.randn(3, 12, input_size)
    n_frames = None if lengths is None else torch.tensor(lengths)
    valid = torch.ones(3, 12, 1) if lengths is None else (torch.arange(12)[None, :] < n_frames[:, None])[..., None]
    weights = torch.randn(3, 12, 8)  # a loss that weighs every output differently

    results = []
    for fn in (lambda xx: sru(xx, n_frames), lambda xx: sru_reference(sru, xx, n_frames)):
        xx = x.clone().requires_grad_()
        out = fn(xx) * valid  # the fast layer leaves padded frames unspecified
        grads = torch.autograd.grad((out * weights).sum(), [xx, sru.weight, sru.bias])
        results.append((out, *grads))
    for fast, ref in zip(*results):
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


def test_padding_does_not_reach_valid_frames() -> None:
    torch.manual_seed(2)
    sru = BiSRU(8, hidden_size=4)
    x = torch.randn(1, 10, 8)
    alone = sru(x[:, :6])
    padded = torch.cat([x[:, :6], 100 * torch.randn(1, 4, 8)], dim=1)  # loud garbage after frame 6
    torch.testing.assert_close(sru(padded, torch.tensor([6]))[:, :6], alone, rtol=0, atol=1e-6)

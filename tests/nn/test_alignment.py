"""The class-conditional MMD of remap_lib.nn.alignment, on tiny tensors computed by hand."""

import math

import pytest
import torch

from remap_lib.nn.alignment import class_conditional_mmd2, gaussian_mmd2, median_distance


def test_mmd2_of_one_sample_against_itself_is_the_unbiased_value():
    # x = y = {0, 1}, one kernel of width 1: k(0, 1) = e^-1/2; within-sample means k(0, 1) each, the
    # cross mean (1 + 1 + 2 k(0, 1)) / 4, so MMD² = 2 k - (1 + k) = k - 1 (negative: unbiased, not clipped)
    x = torch.tensor([[0.0], [1.0]])
    assert gaussian_mmd2(x, x.clone(), 1.0, factors=(1.0,)).item() == pytest.approx(math.exp(-0.5) - 1.0)


def test_mmd2_of_separated_samples():
    # x = {0, 0}, y = {2, 2}: within-sample kernels 1, cross kernels e^-2, so MMD² = 1 + 1 - 2 e^-2
    x, y = torch.zeros(2, 1), torch.full((2, 1), 2.0)
    assert gaussian_mmd2(x, y, 1.0, factors=(1.0,)).item() == pytest.approx(2.0 - 2.0 * math.exp(-2.0))
    # three widths sum three kernels: 0.5 -> e^-8, 1 -> e^-2, 2 -> e^-0.5
    expected = 6.0 - 2.0 * (math.exp(-8.0) + math.exp(-2.0) + math.exp(-0.5))
    assert gaussian_mmd2(x, y, 1.0).item() == pytest.approx(expected)


def test_mmd2_needs_two_rows_a_side():
    with pytest.raises(ValueError, match="at least 2 rows"):
        gaussian_mmd2(torch.zeros(1, 3), torch.zeros(4, 3), 1.0)


def test_median_distance():
    # distances among {0, 1, 3}: 1, 3, 2 (each twice off the diagonal): median 2
    assert median_distance(torch.tensor([[0.0], [1.0], [3.0]])).item() == pytest.approx(2.0)


def test_conditional_mmd_compares_within_classes_only():
    # dwarfs: synthetic {0, 0}, observed {0, 0} -> 0; giants: synthetic {2, 2}, observed {2, 2} -> 0.
    # A marginal MMD would see two identical mixtures too, so also shift the giants' observed rows:
    features = torch.tensor([[0.0], [0.0], [0.0], [0.0], [2.0], [2.0], [2.0], [2.0]])
    synthetic = torch.tensor([True, True, False, False, True, True, False, False])
    giant = torch.tensor([False, False, False, False, True, True, True, True])
    assert class_conditional_mmd2(features, synthetic, giant).item() == pytest.approx(0.0, abs=1e-6)
    # observed dwarfs labelled giants and vice versa: each class now compares {0, 0} with {2, 2}
    swapped = torch.tensor([False, False, True, True, True, True, False, False])
    value = class_conditional_mmd2(features, synthetic, swapped).item()
    bandwidth = median_distance(features).item()  # 2: half the pairs are 2 apart
    k = sum(math.exp(-4.0 / (2.0 * (f * bandwidth) ** 2)) for f in (0.5, 1.0, 2.0))
    assert value == pytest.approx(6.0 - 2.0 * k)


def test_conditional_mmd_skips_thin_classes_and_keeps_the_graph():
    features = torch.randn(5, 4, requires_grad=True)
    synthetic = torch.tensor([True, False, False, False, False])  # one synthetic row: no class has two
    value = class_conditional_mmd2(features, synthetic, torch.zeros(5, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    assert features.grad is not None and torch.all(features.grad == 0)


def test_conditional_mmd_gradient_pulls_the_domains_together():
    torch.manual_seed(0)
    synthetic = torch.tensor([True] * 4 + [False] * 4)
    giant = torch.zeros(8, dtype=torch.bool)
    features = torch.cat([torch.randn(4, 3), torch.randn(4, 3) + 3.0]).requires_grad_(True)
    before = class_conditional_mmd2(features, synthetic, giant)
    before.backward()
    with torch.no_grad():
        moved = features - 0.5 * features.grad
    assert class_conditional_mmd2(moved, synthetic, giant).item() < before.item()

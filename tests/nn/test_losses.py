"""Losses on tiny tensors with values computed by hand (arithmetic in the comments)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from remap_lib.nn.binning import LabelBins
from remap_lib.nn.losses import (
    MultiTaskLoss,
    batch_hard_triplet_loss,
    class_weights_from_counts,
    cost_matrix,
    focal_cost_loss,
    scale_labels,
)

torch.set_num_threads(2)
LN2, LN4, LN4_3 = math.log(2), math.log(4), math.log(4 / 3)  # 0.693147, 1.386294, 0.287682
C1, C2 = 1 - math.exp(-0.5), 1 - math.exp(-2.0)  # 0.393469, 0.864665


def _logits(*p):
    """Logits whose softmax is p (log p, with softmax's normalizer 1)."""
    return torch.log(torch.tensor([p], dtype=torch.float32)).requires_grad_()


def test_cost_matrix():
    # σ=1: |i−j|=1 -> 1−e^{−1/2} = 0.39347; |i−j|=2 -> 1−e^{−4/2} = 0.86466
    c = cost_matrix(3, 1.0)
    want = torch.tensor([[0, C1, C2], [C1, 0, C1], [C2, C1, 0]])
    assert c.dtype == torch.float32 and torch.allclose(c, want, atol=1e-6)
    assert abs(C1 - 0.39347) < 1e-5 and abs(C2 - 0.86466) < 1e-5


def test_gamma0_is_cross_entropy():
    # p = (0.5, 0.25, 0.25); one-hot bin 0: −log 0.5 = 0.693147
    lg = _logits(0.5, 0.25, 0.25)
    assert focal_cost_loss(lg, torch.tensor([[1.0, 0, 0]]), gamma=0).item() == pytest.approx(LN2, abs=1e-6)
    # soft (0.5, 0.5, 0): 0.5·0.693147 + 0.5·1.386294 = 1.039721
    soft = torch.tensor([[0.5, 0.5, 0.0]])
    assert focal_cost_loss(lg, soft, gamma=0).item() == pytest.approx(0.5 * LN2 + 0.5 * LN4, abs=1e-6)
    # and torch's own soft-target cross-entropy on random data
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    t = torch.softmax(torch.randn(6, 5, generator=g), -1)
    assert torch.allclose(focal_cost_loss(x, t, gamma=0), F.cross_entropy(x, t), atol=1e-6)


def test_focal_gamma2_two_class():
    # logits (0, ln 3) -> p = (1/4, 3/4)
    # true class 1: −(1−3/4)² ln(3/4) = 0.0625·0.287682 = 0.017980
    # true class 0: −(1−1/4)² ln(1/4) = 0.5625·1.386294 = 0.779791; batch mean 0.398885
    lg = torch.log(torch.tensor([[1.0, 3.0], [1.0, 3.0]]))
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    per = focal_cost_loss(lg, t, gamma=2.0, reduction="none")
    assert torch.allclose(per, torch.tensor([0.0625 * LN4_3, 0.5625 * LN4]), atol=1e-6)
    assert focal_cost_loss(lg, t, gamma=2.0).item() == pytest.approx(0.398885, abs=1e-6)
    # class weights (2, 0.5): 0.5·0.017980 = 0.008990, 2·0.779791 = 1.559581; sum 1.568571
    w = torch.tensor([2.0, 0.5])
    per = focal_cost_loss(lg, t, gamma=2.0, class_weights=w, reduction="none")
    assert torch.allclose(per, torch.tensor([0.008990, 1.559581]), atol=1e-6)
    assert focal_cost_loss(lg, t, gamma=2.0, class_weights=w, reduction="sum").item() == pytest.approx(
        1.568571, abs=1e-6
    )


def test_cost_term():
    # one-hot bin 0, p = (0.5, 0.25, 0.25): Σ_j C[0, j] p_j = 0.25·0.39347 + 0.25·0.86466 = 0.314534
    lg, t, c = _logits(0.5, 0.25, 0.25), torch.tensor([[1.0, 0, 0]]), cost_matrix(3, 1.0)
    cost_term = 0.25 * C1 + 0.25 * C2
    assert cost_term == pytest.approx(0.314534, abs=1e-6)
    assert focal_cost_loss(lg, t, gamma=0, cost=c).item() == pytest.approx(LN2 + cost_term, abs=1e-6)
    assert focal_cost_loss(lg, t, gamma=0, cost=c, cost_weight=2.0).item() == pytest.approx(LN2 + 2 * cost_term, 1e-6)
    # probability far from the truth costs more: the same p, truth in the middle bin: 0.5·C1 + 0.25·C1
    t1 = torch.tensor([[0.0, 1.0, 0.0]])
    assert focal_cost_loss(lg, t1, gamma=0, cost=c).item() == pytest.approx(LN4 + 0.75 * C1, abs=1e-6)


def test_unknown_rows_excluded():
    lg = torch.log(torch.tensor([[1.0, 3.0], [2.0, 1.0]])).requires_grad_()
    t = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # second row: unknown label
    assert focal_cost_loss(lg, t, gamma=2.0).item() == pytest.approx(0.0625 * LN4_3, abs=1e-6)
    # all unknown -> exactly 0, finite (zero) grad
    z = focal_cost_loss(lg, torch.zeros(2, 2), gamma=2.0, cost=cost_matrix(2, 1.0))
    z.backward()
    assert z.item() == 0.0 and torch.isfinite(lg.grad).all() and (lg.grad == 0).all()


def test_class_weights_from_counts():
    # counts (1, 4, 16), power 0.5: 1/√c = (1, 0.5, 0.25), mean 0.583333 -> (1.714286, 0.857143, 0.428571)
    w = class_weights_from_counts([1, 4, 16])
    assert torch.allclose(w, torch.tensor([1.714286, 0.857143, 0.428571]), atol=1e-6)
    # an empty bin takes the rarest occupied bin's weight: (1, 0.5, 1)/0.833333 = (1.2, 0.6, 1.2)
    assert torch.allclose(class_weights_from_counts(np.array([1, 4, 0])), torch.tensor([1.2, 0.6, 1.2]))
    assert torch.equal(class_weights_from_counts([0, 0]), torch.ones(2))
    assert torch.allclose(class_weights_from_counts([5, 7], power=0.0), torch.ones(2))


def test_scale_labels():
    out = scale_labels(np.array([[5800.0, 4.4, -0.3]]))
    assert np.allclose(out, [[58.0, 22.0, -3.0]])
    assert torch.allclose(scale_labels(torch.tensor([[5800.0, 4.4, -0.3]])), torch.tensor([[58.0, 22.0, -3.0]]))


def _line(xs):
    return torch.tensor([[x, 0.0] for x in xs], requires_grad=True)


def _lab(ls):
    return torch.tensor([[x, 0.0, 0.0] for x in ls])


def test_triplet_hand():
    # embeddings on a line A=0, B=0.3, C=0.4, D=1.0; scaled labels A=0, B=0.5, C=3, D=1.4
    # label distances: AB .5 (pos), AC 3 (neg), AD 1.4 (neither), BC 2.5 (neg), BD .9 (pos), CD 1.6 (neither)
    # A: hardest pos B (0.3), hardest neg C (0.4): relu(0.3 − 0.4 + 0.2) = 0.1
    # B: positives A (0.3), D (0.7) -> 0.7; neg C (0.1): relu(0.7 − 0.1 + 0.2) = 0.8
    # C: no positive; D: no negative -> excluded. Mean (0.1 + 0.8)/2 = 0.45
    e = _line([0.0, 0.3, 0.4, 1.0])
    loss = batch_hard_triplet_loss(e, _lab([0.0, 0.5, 3.0, 1.4]), margin=0.2)
    assert loss.item() == pytest.approx(0.45, abs=1e-5)
    loss.backward()
    # L = ½[(xB−xA) − (xC−xA) + 0.2] + ½[(xD−xB) − (xC−xB) + 0.2]
    # dL/dxA = ½(−1 + 1) = 0; dL/dxB = ½(1 − 1 + 1) = 0.5; dL/dxC = ½(−1 − 1) = −1; dL/dxD = 0.5
    want = torch.tensor([[0.0, 0.0], [0.5, 0.0], [-1.0, 0.0], [0.5, 0.0]])
    assert torch.allclose(e.grad, want, atol=1e-5)


def test_losses_float32_under_autocast():
    # bf16 autocast must not touch the cost matmul or the Gram distances: same values as float32
    e, lab = _line([0.0, 0.3, 0.4, 1.0]), _lab([0.0, 0.5, 3.0, 1.4])
    lg, t, c = _logits(0.5, 0.25, 0.25), torch.tensor([[1.0, 0, 0]]), cost_matrix(3, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tl = batch_hard_triplet_loss(e, lab)
        fl = focal_cost_loss(lg, t, gamma=0, cost=c)
    assert tl.dtype == fl.dtype == torch.float32
    assert tl.item() == pytest.approx(0.45, abs=1e-5) and fl.item() == pytest.approx(LN2 + 0.25 * C1 + 0.25 * C2, 1e-6)


def test_triplet_nan_labels_ignored():
    # a NaN-label point right on top of A would be its hardest negative if it counted: loss stays 0.45
    e = _line([0.0, 0.3, 0.4, 1.0, 0.0])
    lab = _lab([0.0, 0.5, 3.0, 1.4, 0.0])
    lab[4, 2] = float("nan")
    loss = batch_hard_triplet_loss(e, lab)
    loss.backward()
    assert loss.item() == pytest.approx(0.45, abs=1e-5) and torch.isfinite(e.grad).all()
    assert (e.grad[4] == 0).all()


def test_triplet_no_valid_anchor():
    # identical labels: everybody is a positive, nobody a negative -> exactly 0, zero finite grad
    e = torch.nn.functional.normalize(torch.randn(5, 4), dim=1).requires_grad_()
    loss = batch_hard_triplet_loss(e, torch.zeros(5, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(e.grad).all() and (e.grad == 0).all()
    nan_lab = torch.full((5, 3), float("nan"))
    assert batch_hard_triplet_loss(e, nan_lab).item() == 0.0


def test_triplet_identical_embeddings_finite_grad():
    # all distances 0 (up to the 1e-6 floor): A, B positives, C negative -> loss = 0 − 0 + 0.2
    e = torch.tensor([[0.6, 0.8]] * 3, requires_grad=True)
    loss = batch_hard_triplet_loss(e, _lab([0.0, 0.5, 3.0]), margin=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.2, abs=1e-5) and torch.isfinite(e.grad).all()


def _tiny_bins():
    return [LabelBins("a", (0.0, 1.0, 2.0)), LabelBins("b", (0.0, 1.0, 2.0, 3.0))]


def test_multitask_components():
    la = torch.log(torch.tensor([[1.0, 3.0], [1.0, 3.0]]))
    lb = torch.log(torch.tensor([[2.0, 1.0, 1.0], [2.0, 1.0, 1.0]]))
    ta = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    tb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # 2nd row unknown
    # γ=0, no cost: head a = mean(ln(4/3), ln 4) = 0.836988; head b = ln 2 (row 2 ignored)
    mt = MultiTaskLoss(_tiny_bins(), gamma=0.0, cost_sigma=None, triplet_weight=0.0, head_weights=[1.0, 2.0])
    total, comp = mt({"a": la, "b": lb}, [ta, tb])
    assert comp["a"] == pytest.approx(0.5 * (LN4_3 + LN4), abs=1e-6) and comp["b"] == pytest.approx(LN2, abs=1e-6)
    assert total.item() == pytest.approx(comp["a"] + 2 * comp["b"], abs=1e-6) and comp["total"] == total.item()
    assert "triplet" not in comp


def test_multitask_with_cost_triplet_and_weights():
    # cost_sigma=1 label unit on unit bins = σ 1 bin: head b row 1 adds 0.25·C1 + 0.25·C2 to ln 2
    lb = torch.log(torch.tensor([[2.0, 1.0, 1.0]]))
    la = torch.zeros(1, 2, requires_grad=True)
    mt = MultiTaskLoss(
        _tiny_bins(),
        gamma=0.0,
        cost_sigma=(None, 1.0),
        class_weights={"a": torch.tensor([3.0, 1.0])},
        triplet_weight=0.5,
        label_scales=(1.0, 1.0, 1.0),
    )
    assert mt.cost_a is None and mt.cost_b.shape == (3, 3)
    emb = _line([0.0, 0.3, 0.4, 1.0])
    lab = _lab([0.0, 0.5, 3.0, 1.4])
    la4, lb4 = la.expand(4, 2), lb.expand(4, 3)
    ta = torch.tensor([[1.0, 0.0]] + [[0.0, 0.0]] * 3)  # weight 3 on class 0, p = 1/2: 3·ln 2
    tb = torch.tensor([[1.0, 0.0, 0.0]] + [[0.0, 0.0, 0.0]] * 3)
    total, comp = mt([la4, lb4], [ta, tb], emb, lab)
    assert comp["a"] == pytest.approx(3 * LN2, abs=1e-6)
    assert comp["b"] == pytest.approx(LN2 + 0.25 * C1 + 0.25 * C2, abs=1e-6)
    assert comp["triplet"] == pytest.approx(0.45, abs=1e-5)
    assert total.item() == pytest.approx(comp["a"] + comp["b"] + 0.5 * 0.45, abs=1e-5)
    total.backward()
    assert torch.isfinite(la.grad).all() and torch.isfinite(emb.grad).all()

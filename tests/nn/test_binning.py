"""Label bins: construction, serialization, soft targets, decoding (hand-checked values)."""

import json
import math

import numpy as np
import pytest
import torch

from remap_lib.nn.binning import DEFAULT_BINS, LabelBins, encode_labels

TEFF = DEFAULT_BINS["teff"]
ABC = LabelBins("x", (0.0, 1.0, 2.0, 3.0), "u")  # three unit bins, centres 0.5, 1.5, 2.5


def test_uniform_and_defaults():
    assert TEFF.nbins == 68 and TEFF.edges[0] == 3700 and TEFF.edges[-1] == 7100  # 3400 K / 50 K
    assert DEFAULT_BINS["logg"].nbins == 49  # 4.9 / 0.1
    assert DEFAULT_BINS["feh"].nbins == 68  # 3.4 / 0.05
    assert np.allclose(DEFAULT_BINS["logg"].widths, 0.1) and np.allclose(DEFAULT_BINS["feh"].widths, 0.05)
    assert TEFF.centers[0] == 3725 and TEFF.centers[-1] == 7075
    assert abs(DEFAULT_BINS["feh"].edges[-1] - 0.7) < 1e-12  # no accumulated rounding
    with pytest.raises(ValueError):
        LabelBins.uniform("bad", 0.0, 1.0, 0.3)
    with pytest.raises(ValueError):
        LabelBins("bad", (0.0, 2.0, 1.0))


def test_dict_roundtrip_json():
    d = json.loads(json.dumps(TEFF.to_dict()))
    back = LabelBins.from_dict(d)
    assert back == TEFF and hash(back) == hash(TEFF) and back.unit == "K"


def test_bin_index():
    # 0.5 -> bin 0; 1.0 on an inner edge -> upper bin 1; outside -> clipped; top edge -> last bin.
    idx = ABC.bin_index([0.5, 1.0, -5.0, 3.0, 99.0, np.nan])
    assert idx.tolist() == [0, 1, 0, 2, 2, -1]


def test_soft_targets_one_hot_nan_and_sum():
    t = ABC.soft_targets([0.2, 2.9, np.nan, 7.0])
    assert t.dtype == np.float32 and t.shape == (4, 3)
    assert t.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 1]]
    assert np.array_equal(ABC.soft_targets([1.2], sigma=0.0), [[0, 1, 0]])
    v = np.linspace(3500, 7300, 40)
    s = TEFF.soft_targets(v, sigma=80.0)
    assert np.allclose(s.sum(1), 1.0, atol=1e-6) and np.all(s >= 0)


def test_soft_target_hand_values():
    # value 1.5 (centre of bin 1), sigma 1: the standard normal over [-1.5,-0.5], [-0.5,0.5], [0.5,1.5]:
    # Φ(0.5)-Φ(-0.5) = 0.691462-0.308538 = 0.382925; Φ(1.5)-Φ(0.5) = 0.933193-0.691462 = 0.241730
    # each side; total 0.866386 -> renormalized 0.241730/0.866386 = 0.279010, 0.382925/0.866386 = 0.441980.
    t = ABC.soft_targets([1.5], sigma=1.0)[0]
    assert np.allclose(t, [0.279010, 0.441980, 0.279010], atol=2e-6)
    # per-sample sigma: 0 gives one-hot, NaN sigma too, positive gives a spread
    t = ABC.soft_targets([1.5, 1.5, 1.5], sigma=np.array([0.0, np.nan, 1.0]))
    assert t[0].tolist() == [0, 1, 0] and t[1].tolist() == [0, 1, 0] and t[2, 0] > 0.2


def test_soft_target_mean_matches_value():
    # Between centres, away from the edges, the discretized Gaussian's mean over bin centres equals
    # the value (the rounding error of a sigma >= width Gaussian is ~exp(-2π²) ≈ 3e-9 of a width).
    v = np.array([5012.0, 5837.5, 6110.0, 4480.0])
    t = TEFF.soft_targets(v, sigma=60.0)
    assert np.allclose(t.astype(np.float64) @ TEFF.centers, v, atol=0.05)
    # out-of-range values are clipped to the outer centre first
    t = TEFF.soft_targets([1e5], sigma=60.0)
    assert t.argmax() == TEFF.nbins - 1 and abs(t.sum() - 1) < 1e-6


def test_decode_one_hot():
    k = 17
    p = np.zeros((1, TEFF.nbins))
    p[0, k] = 1.0
    d = TEFF.decode(p)
    c, lo, hi = TEFF.centers[k], TEFF.edges[k], TEFF.edges[k + 1]
    assert d["median"][0] == pytest.approx(c) and d["mode"][0] == c and d["mean"][0] == pytest.approx(c)
    # uniform within the bin: p16 = lo + 0.16·50 = lo + 8; p84 = lo + 42
    assert d["p16"][0] == pytest.approx(lo + 8.0) and d["p84"][0] == pytest.approx(lo + 42.0)
    assert lo <= d["p2_5"][0] < d["p97_5"][0] <= hi
    assert d["std"][0] == pytest.approx(50.0 / math.sqrt(12.0))  # within-bin std only


def test_decode_two_bins_hand():
    b = LabelBins("y", (0.0, 1.0, 2.0))
    # p = (0.2, 0.8): CDF at edges 0, 0.2, 1.0
    # p2_5 = 0.025/0.2 = 0.125; p16 = 0.16/0.2 = 0.8; median = 1 + (0.5-0.2)/0.8 = 1.375
    # p84 = 1 + 0.64/0.8 = 1.8; p97_5 = 1 + 0.775/0.8 = 1.96875
    d = b.decode(torch.tensor([[0.2, 0.8], [1.0, 1.0]]))  # torch input; 2nd row unnormalized
    assert d["p2_5"][0] == pytest.approx(0.125) and d["p16"][0] == pytest.approx(0.8)
    assert d["median"][0] == pytest.approx(1.375) and d["p84"][0] == pytest.approx(1.8)
    assert d["p97_5"][0] == pytest.approx(1.96875) and d["mode"][0] == 1.5
    # uniform (0.5, 0.5) = uniform on [0, 2]: quantile q -> 2q
    for key, q in [("p2_5", 0.025), ("p16", 0.16), ("median", 0.5), ("p84", 0.84), ("p97_5", 0.975)]:
        assert d[key][1] == pytest.approx(2 * q)


def test_decode_mean_std_and_zero_row():
    # p = (0.25, 0.5, 0.25) on centres 0.5, 1.5, 2.5: mean 1.5;
    # var = 0.25·1 + 0.25·1 (between bins) + 1/12 (within a unit bin) = 0.583333, std 0.763763
    d = ABC.decode(np.array([[0.5, 1.0, 0.5], [0.0, 0.0, 0.0]]))  # ×2: renormalized
    assert d["mean"][0] == pytest.approx(1.5) and d["std"][0] == pytest.approx(0.763763, abs=1e-6)
    assert d["median"][0] == pytest.approx(1.5) and d["mode"][0] == 1.5
    assert all(np.isnan(v[1]) for v in d.values())  # unknown row -> NaN, no exception


def test_encode_labels():
    lab = np.array([[5800.0, 4.44, 0.0], [4500.0, np.nan, -1.0]])
    t = encode_labels(lab)
    assert [x.shape for x in t] == [(2, 68), (2, 49), (2, 68)]
    assert t[1][1].sum() == 0 and t[0][0].sum() == 1
    t = encode_labels(lab, sigma=[80.0, 0.1, None])
    assert (t[0][0] > 0).sum() > 3 and t[2][0].max() == 1.0
    t = encode_labels(lab, sigma=np.full((2, 3), [80.0, 0.1, 0.05]))
    assert np.allclose(t[0].sum(1), 1) and np.allclose(t[2].sum(1), 1) and t[1][1].sum() == 0
    with pytest.raises(ValueError):
        encode_labels(lab[:, :2])

"""remap_lib.prediction.widening: reading a widened PMF about the unwidened median."""

import numpy as np
import pytest

from remap_lib.prediction.widening import recentre


def test_recentre_moves_the_widened_quantiles_onto_the_raw_median_by_hand():
    widened = {"median": np.array([5.0]), "p16": np.array([3.0]), "p84": np.array([8.0]), "p2_5": np.array([1.0]),
               "p97_5": np.array([9.0]), "mean": np.array([5.5]), "std": np.array([2.0]), "mode": np.array([5.0])}
    raw = {"median": np.array([6.0]), "p16": np.array([5.5]), "p84": np.array([6.5]), "p2_5": np.array([5.0]),
           "p97_5": np.array([7.0]), "mean": np.array([6.2]), "std": np.array([0.5]), "mode": np.array([6.5])}
    out = recentre(widened, raw)
    # the widened interval (3, 8) about its median 5, moved by +1 onto the raw median 6
    assert [out[k][0] for k in ("p16", "p84", "p2_5", "p97_5")] == [4.0, 9.0, 2.0, 10.0]
    assert (out["median"][0], out["mean"][0], out["mode"][0]) == (6.0, 6.2, 6.5)  # the point estimates are raw's
    assert out["std"][0] == 2.0  # the spread is the widened one's
    assert widened["p16"][0] == 3.0  # the input is left as it was


def test_recentre_of_an_unwidened_pmf_changes_nothing():
    from remap_lib.nn.binning import DEFAULT_BINS

    bins = DEFAULT_BINS["logg"]
    pmf = np.exp(-0.5 * ((bins.centers - 4.6) / 0.2) ** 2)[None, :]
    d = bins.decode(pmf / pmf.sum())
    out = recentre(d, d)
    for key in d:
        assert out[key][0] == pytest.approx(d[key][0])


def test_interval_factors_by_hand():
    from remap_lib.prediction.widening import Widening

    plain = Widening(intervals={"68": {"teff": 0.6}, "95": {"logg": 0.8}})
    f = plain.interval_factors([50.0, 5.0])
    np.testing.assert_allclose(f["68"], [[0.6, 1.0, 1.0]] * 2)  # 1 where nothing was fitted
    np.testing.assert_allclose(f["95"], [[1.0, 0.8, 1.0]] * 2)
    assert not plain.intervals_by_snr
    by_snr = Widening(intervals={"68": {"teff": 0.6, "logg": 0.5, "feh": 0.7}, "95": {"teff": 0.8},
                                 "by_snr": {"snr": [40.0, 20.0, 10.0], "68": {"teff": [0.6, 0.9, 1.2]}}})
    f = by_snr.interval_factors([100.0, 40.0, np.sqrt(800.0), 20.0, 10.0, 3.0])
    # linear in log S/N between the nodes: sqrt(800) is halfway between 20 and 40
    np.testing.assert_allclose(f["68"][:, 0], [0.6, 0.6, 0.75, 0.9, 1.2, 1.2])
    np.testing.assert_allclose(f["68"][:, 1], 0.5)  # a label without nodes keeps its clean factor
    np.testing.assert_allclose(f["95"][:, 0], 0.8)
    assert by_snr.intervals_by_snr

"""remap_lib.prediction.outsidebox: features, the threshold rule, the fit, nested cross-validation, saving."""

import numpy as np
import pytest

from remap_lib.prediction import outsidebox
from remap_lib.prediction.outsidebox import BoxClassifier, box_features, cross_validated_flags, fit, threshold_for


def test_box_features_put_the_pmfs_chi2_and_embedding_side_by_side():
    pmfs = {"teff": [[0.2, 0.8]], "logg": [[1.0, 0.0, 0.0]], "feh": [[0.5, 0.5]]}
    row = box_features(pmfs, [1.5], [[0.6, 0.8]])
    np.testing.assert_allclose(row, [[0.2, 0.8, 1.0, 0.0, 0.0, 0.5, 0.5, 1.5, 0.6, 0.8]])


def test_threshold_keeps_the_union_with_novelty_within_the_rate():
    scores = np.arange(20.0)  # 20 in-domain rows, 0..19
    novelty = np.zeros(20, bool)
    # 5 % of 20 is one row: the classifier may flag only the highest score
    t = threshold_for(scores, novelty, 0.05)
    assert np.sum(scores > t) == 1 and t == 18.0
    # 10 %: two rows; one of them already flagged by novelty leaves the classifier one more
    novelty[0] = True
    t = threshold_for(scores, novelty, 0.10)
    assert np.sum((scores > t) | novelty) == 2 and np.sum(scores > t) == 1
    # novelty alone over the budget: the classifier flags nothing
    assert threshold_for(scores, np.arange(20) < 3, 0.10) == np.inf
    # a budget as large as the rows flags them all
    t = threshold_for(scores, np.zeros(20, bool), 1.0)
    assert np.all(scores > t)


def _toy(n_in=150, n_out=60, seed=0):
    """Two Gaussian clouds 3σ apart along one of five features; three classes inside, two outside."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n_in + n_out, 5))
    x[n_in:, 0] += 3.0
    outside = np.arange(n_in + n_out) >= n_in
    groups = np.where(outside, 3 + np.arange(n_in + n_out) % 2, np.arange(n_in + n_out) % 3)
    return x, outside, groups


def test_fit_separates_the_clouds_within_the_in_domain_budget():
    x, outside, groups = _toy()
    novelty = np.zeros(len(outside), bool)
    clf, info = fit(x, outside, novelty, groups, seed=0, rate=0.05)
    assert info["c"] in outsidebox.C_GRID and set(info["detected"]) == set(outsidebox.C_GRID)
    assert clf.c == info["c"] and np.isfinite(clf.threshold)
    # the threshold is set on out-of-fold scores: at most 5 % of those in-domain scores exceed it
    assert np.mean(info["oof_scores"][~outside] > clf.threshold) <= 0.05
    # a 3σ shift at 5 % false flags: about Φ(3 − 1.64) ≈ 91 % of the outside rows (out of fold)
    assert info["detected"][info["c"]] > 0.75
    assert np.mean(clf.flag(x[outside])) > 0.75 and clf.score(x[:1]).shape == (1,)
    p = clf.probability(x)
    assert np.all((p > 0) & (p < 1)) and p[outside].mean() > p[~outside].mean()


def test_fit_needs_both_kinds_of_rows():
    x, outside, groups = _toy()
    with pytest.raises(ValueError, match="inside and outside"):
        fit(x, np.zeros(len(outside), bool), np.zeros(len(outside), bool), groups)


def test_nested_flags_never_depend_on_the_row_itself():
    """A row's cross-validated score comes from a classifier that never saw it: relabelling one in-domain
    row as outside (same folds) leaves its own score exactly as it was, and moves the rows whose
    classifiers were fitted with it."""
    x, outside, groups = _toy()
    novelty = np.zeros(len(outside), bool)
    base = cross_validated_flags(x, outside, novelty, groups, seed=0, rate=0.05)
    assert base["flags"].shape == outside.shape and len(base["c"]) == outsidebox.FOLDS
    assert base["flags"][outside].mean() > 0.75 and base["flags"][~outside].mean() <= 0.08
    relabelled = outside.copy()
    relabelled[0] = True
    moved = cross_validated_flags(x, relabelled, novelty, groups, seed=0, rate=0.05)
    assert moved["scores"][0] == base["scores"][0]
    assert not np.allclose(moved["scores"], base["scores"])


def test_novelty_flags_count_against_the_budget():
    x, outside, groups = _toy()
    novelty = np.zeros(len(outside), bool)
    novelty[:15] = True  # 10 % of the in-domain rows are flagged already, over a 5 % budget
    clf, _ = fit(x, outside, novelty, groups, seed=0, rate=0.05)
    assert clf.threshold == np.inf and not clf.flag(x).any()


def test_saved_arrays_round_trip(tmp_path):
    clf = BoxClassifier(np.array([1.0, 2.0]), np.array([0.5, 4.0]), np.array([2.0, -1.0]), 0.25, 1.5, 0.1)
    path = tmp_path / "box.npz"
    np.savez(path, **clf.arrays(), other=np.zeros(1))
    with np.load(path) as z:
        back = BoxClassifier.from_arrays(z)
        assert BoxClassifier.from_arrays(z, prefix="nothing_") is None
    x = np.array([[3.0, 6.0]])  # standardised (4, 1): log-odds 2·4 − 1 + 0.25 = 7.25
    np.testing.assert_allclose(back.score(x), [7.25])
    np.testing.assert_allclose(back.probability(x), [1 / (1 + np.exp(-7.25))])
    assert back.flag(x)[0] and back.threshold == 1.5 and back.c == 0.1

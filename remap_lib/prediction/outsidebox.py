"""Is this a star outside the FGK box? A classifier taught by MILES stars that are (outlier exposure).

The novelty score of :mod:`remap_lib.prediction.ood` asks whether a spectrum looks like a training star
with the labels the network gives it. A 7300 K F star or a 3900 K K7 dwarf does: in the 5000–5700 Å
window it looks much like a star at the edge of the range, the network calls it one, and χ² finds that
answer consistent. Outlier exposure (Hendrycks, Mazeika & Dietterich 2019) shows the detector examples of
what to reject. An L2-regularised logistic regression reads what the network already computes for every
input: its three unwidened PMFs, the novelty detector's log χ², and its embedding. It learns to separate
the MILES stars inside the box (the fine-tuning, validation and calibration dwarfs and the FGK giant
candidates) from the MILES stars outside it (:data:`remap_lib.prediction.oodinputs.OUTSIDE_BOX`).

``out_of_domain`` fires when either the novelty score or this classifier fires. The classifier's
threshold is set so that the two together flag at most :data:`RATE` of the in-domain stars that the
network was not fine-tuned on, on out-of-fold scores.

Its evaluation (:func:`cross_validated_flags`) is nested cross-validation, so no star is flagged by a
classifier fitted to it. In each outer fold, the regularisation strength and the threshold are chosen on
the other folds' own out-of-fold scores, and the held-out fold is then flagged. The shipped classifier
(:func:`fit`) is chosen the same way on every star. It is fitted on all of them, so on the MILES stars
themselves it flags a little more than the report says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from remap_lib.constants import LABEL_NAMES

#: The share of in-domain stars ``out_of_domain`` may flag, novelty and classifier together (issue 13's
#: goal: at most 5 % of in-domain FGK stars flagged).
RATE = 0.05
#: Inverse L2 strengths tried (scikit-learn's C, on standardised features); the one that catches most
#: outside-box stars in the out-of-fold scores wins, the strongest regularisation on ties.
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
#: Cross-validation folds, outer and inner.
FOLDS = 5


def box_features(pmfs: dict, log_chi2, embedding) -> np.ndarray:
    """(n, k): the unwidened Teff, log g and [Fe/H] PMFs, log χ² and the embedding, side by side."""
    cols = [np.atleast_2d(np.asarray(pmfs[n], dtype=np.float64)) for n in LABEL_NAMES]
    cols.append(np.asarray(log_chi2, dtype=np.float64).reshape(-1, 1))
    cols.append(np.atleast_2d(np.asarray(embedding, dtype=np.float64)))
    return np.column_stack(cols)


@dataclass
class BoxClassifier:
    """A fitted classifier: standardisation, logistic weights, the threshold on its log-odds and its C."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float = np.inf
    c: float = 1.0

    def score(self, features) -> np.ndarray:
        """Log-odds that each row is outside the box."""
        return ((np.atleast_2d(features) - self.mean) / self.scale) @ self.weights + self.bias

    def probability(self, features) -> np.ndarray:
        """The classifier's probability of outside the box, under its training mix of stars."""
        return 1.0 / (1.0 + np.exp(-self.score(features)))

    def flag(self, features) -> np.ndarray:
        return self.score(features) > self.threshold

    def arrays(self, prefix: str = "box_") -> dict:
        """The fields as arrays for ``np.savez`` under ``prefix``."""
        return {f"{prefix}{k}": np.asarray(getattr(self, k), dtype=np.float64)
                for k in ("mean", "scale", "weights", "bias", "threshold", "c")}

    @classmethod
    def from_arrays(cls, z, prefix: str = "box_") -> BoxClassifier | None:
        """The classifier saved by :meth:`arrays` in an ``np.load`` result, or None where there is none."""
        if f"{prefix}weights" not in getattr(z, "files", z):
            return None
        return cls(*(np.asarray(z[f"{prefix}{k}"], dtype=np.float64) for k in ("mean", "scale", "weights")),
                   *(float(z[f"{prefix}{k}"]) for k in ("bias", "threshold", "c")))


def fit_logistic(features, outside, c: float) -> BoxClassifier:
    """Standardise, then an L2 logistic regression (scikit-learn); the threshold is left unset."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x), np.asarray(outside, dtype=int))
    return BoxClassifier(scaler.mean_, scaler.scale_, model.coef_[0].copy(), float(model.intercept_[0]), c=c)


def threshold_for(scores_in, novelty_in, rate: float = RATE) -> float:
    """The lowest threshold at which the classifier together with the novelty flag flags at most ``rate``
    of the in-domain rows (inf where the novelty flag alone already flags more)."""
    s = np.asarray(scores_in, dtype=np.float64)
    nov = np.asarray(novelty_in, dtype=bool)
    budget = int(np.floor(rate * s.size + 1e-9)) - int(nov.sum())
    free = np.sort(s[~nov])[::-1]  # rows the classifier alone would add, most outside-looking first
    if budget < 0 or free.size == 0:
        return float("inf")
    if budget >= free.size:
        return float(free[-1]) - 1e-9
    return float(free[budget])  # flags the top `budget` rows (ties at the threshold stay unflagged)


def _splits(outside, groups, seed: int):
    from sklearn.model_selection import StratifiedKFold

    groups = np.asarray(groups)
    _, counts = np.unique(groups, return_counts=True)
    strata = groups if counts.min() >= FOLDS else np.asarray(outside, dtype=int)  # keep every class in each fold
    return StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(strata)), strata)


def oof_scores(features, outside, groups, c: float, seed: int = 0) -> np.ndarray:
    """Each row's log-odds from a classifier fitted without its fold."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(outside, dtype=bool)
    out = np.empty(len(y))
    for train, test in _splits(y, groups, seed):
        out[test] = fit_logistic(x[train], y[train], c).score(x[test])
    return out


def fit(features, outside, novelty, groups, seed: int = 0, rate: float = RATE,
        budget=None) -> tuple[BoxClassifier, dict]:
    """The classifier of these rows: C and threshold chosen on out-of-fold scores, weights fitted on all.

    ``outside``: the rows outside the box; ``novelty``: the rows the novelty score (or S/N) flags already;
    ``groups``: each row's class, kept in proportion in every fold; ``budget``: the in-domain rows the
    rate is counted on (None: all; the fine-tuning stars, whose network outputs are those of stars it
    was trained on, are better left out). Returns the classifier and
    ``{"c": ..., "detected": {c: share of outside rows flagged, novelty included}, "oof_scores": ...}``.
    """
    y = np.asarray(outside, dtype=bool)
    nov = np.asarray(novelty, dtype=bool)
    counted = ~y if budget is None else ~y & np.asarray(budget, dtype=bool)
    if y.all() or not y.any() or not counted.any():
        raise ValueError("the classifier needs rows inside and outside the box")
    best, detected, scores_of = None, {}, {}
    for c in C_GRID:
        s = oof_scores(features, y, groups, c, seed)
        t = threshold_for(s[counted], nov[counted], rate)
        detected[c] = float(np.mean((s[y] > t) | nov[y]))
        scores_of[c] = (s, t)
        if best is None or detected[c] > detected[best]:
            best = c
    clf = fit_logistic(features, y, best)
    clf.threshold = scores_of[best][1]
    return clf, {"c": best, "detected": detected, "oof_scores": scores_of[best][0]}


def cross_validated_flags(features, outside, novelty, groups, seed: int = 0, rate: float = RATE,
                          budget=None) -> dict:
    """Nested cross-validation: each row flagged by a classifier whose C, threshold and weights never saw
    it. ``{"flags", "scores", "c"}``: the classifier's flags (n,) bool (``out_of_domain`` is these or
    ``novelty``), each row's log-odds from its outer fold's classifier (for ROCs), and each outer fold's C.
    ``budget`` as for :func:`fit`."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(outside, dtype=bool)
    nov = np.asarray(novelty, dtype=bool)
    groups = np.asarray(groups)
    budget = np.ones(len(y), bool) if budget is None else np.asarray(budget, dtype=bool)
    flags, scores, cs = np.zeros(len(y), bool), np.empty(len(y)), []
    for train, test in _splits(y, groups, seed):
        clf, info = fit(x[train], y[train], nov[train], groups[train], seed + 1, rate, budget[train])
        scores[test] = clf.score(x[test])
        flags[test] = clf.flag(x[test])
        cs.append(info["c"])
    return {"flags": flags, "scores": scores, "c": cs}

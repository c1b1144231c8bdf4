"""An out-of-domain detector, fitted on training stars and evaluated: is this a star like those the network learnt from?

    python -m remap_lib.prediction.ood [--model M] [--out results/ood.json]

The network's embedding distance alone (``ood_distance``) misses most stars outside the FGK box: an
A star comes out as a hot metal-poor F dwarf close to training spectra in the embedding. The
detector adds a check the network cannot talk itself out of: **does the spectrum look like a
training star with the labels the network gives it?** A quadratic label → flux model (the form of
The Cannon, Ness et al. 2015) is fitted by least squares to the fine-tuning stars, with a per-pixel
intrinsic scatter; for each input,

    χ² = mean over usable pixels of (flux − model(predicted labels))² / (σ² + scatter²),

with σ = 1/(S/N) of the input. The score is the larger of two robust z-scores, of log χ² and of
log ``ood_distance``, each centred and scaled on the in-domain stars; ``out_of_domain`` fires when
the score exceeds the threshold, or when the input's S/N is below :data:`SNR_FLOOR` (the range of
noise the widening was measured over: below it a spectrum is mostly noise).

The score misses most stars just outside the FGK box, which look like the edge of the range to it.
Where MILES stars outside the box are given (as they are by default), :func:`measure` also fits the
outside-the-box classifier of :mod:`remap_lib.prediction.outsidebox` on them and the in-domain stars,
and ``out_of_domain`` fires when either rule does (flag ``outside_fgk_box`` for the classifier's).

Fitting and threshold (:func:`measure`) use only the fine-tuning stars (scores out of fold, so
no star is scored by a flux model fitted to it), the validation stars and the MILES giant
candidates **without their labels**: the shipped model rehearses the synthetic giants, so giants
are in its domain, and those the network calls giant make a second flux model with the labels the
network gives them (pseudo-labels), which every input called giant is held against. The threshold
is the :data:`QUANTILE` quantile of their scores. The calibration stars are never used by the score;
the classifier uses them, as every class it is fitted on, out of fold only. The detector is saved next to the model
(``<model>.ood.npz``, tied to the model's sha256) and :class:`remap_lib.prediction.inference.Predictor`
uses it when present, else the embedding threshold alone.

The report (``results/ood.json``) has, per class of input, the detection rate and the ROC (the
in-domain calibration stars against that class, :func:`roc`): MILES stars outside the FGK box
(A/B hotter than 10000 K, 7000–10000 K, M cooler than 3700 K, 3700–4000 K), FGK giants, noise-
only spectra, featureless inputs (a flat line, flux in magnitudes), the wrong resolution and
heavy masking, synthetic FGK dwarfs from the pretraining grid's held-out nodes, and another synthetic
library nobody trained on (the Kurucz ATLAS9 test set of :mod:`remap_lib.data.kurucztest`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from remap_lib.constants import FGK_TEFF, GIANT_LOGG, LABEL_NAMES
from remap_lib.fileio import atomic_write, write_json
from remap_lib.prediction import outsidebox
from remap_lib.prediction.oodinputs import GIANTS, OTHER_LIBRARY, OUTSIDE_BOX, measurement_classes

#: Spectra with S/N below this are flagged ``out_of_domain`` whatever they look like (at S/N 1 any
#: spectrum is consistent with any star, so χ² cannot tell); the noise widening was measured down to S/N 5.
SNR_FLOOR = 3.0
#: The share of in-domain (fine-tuning out of fold and validation) stars left below the threshold.
QUANTILE = 0.97
#: Label centre and scale of the quadratic flux model's design matrix (Teff, log g, [Fe/H]).
LABEL_CENTER = np.array([5500.0, 4.3, -0.3])
LABEL_SCALE = np.array([500.0, 0.5, 0.5])
_EPS_DIST = 1e-3  # embedding distances of 0 (a training spectrum itself) stay finite in log


#: An input gets the flag ``teff_outside_range`` when its Teff PMF puts more than this share of its mass
#: outside the Teff range the model was fine-tuned over (:data:`~remap_lib.constants.FGK_TEFF`): the
#: network's bins reach 300 K below it (100 K above), and a star just cooler than the range (3700–4000 K)
#: piles its mass up there while χ² finds it a fine K star; the hot side has too few bins to tell.
#: 0.5: the network's own posterior says "more likely outside than inside" (a decision rule, not a
#: fitted threshold). A flag of its own, apart from ``out_of_domain``: those stars' labels are often
#: about right, and the in-domain stars it also catches lie at the range's edges, where literature
#: temperatures scatter across the edge.
OUTSIDE_MASS = 0.5

#: Fewest MILES stars outside the FGK box that make the outside-the-box classifier: two in every inner
#: test fold of the nested cross-validation; with fewer, ``out_of_domain`` is the novelty score's alone.
MIN_OUTSIDE = 2 * outsidebox.FOLDS ** 2

#: Fold seeds the outside-the-box classifier's nested cross-validation is repeated over (the report's
#: class rates are the first's; ``box.replicates`` has each one's).
REPLICATES = 5

#: Fewest stars called giant that make the giants' own flux model: twice its 10 coefficients, so that
#: every out-of-fold fit is determined; with fewer, inputs called giant are held against the dwarfs'.
MIN_PSEUDO_LABELLED = 20


def design(labels) -> np.ndarray:
    """Quadratic design matrix (n, 10): 1, the three scaled labels, their squares and cross terms."""
    x = (np.atleast_2d(np.asarray(labels, dtype=np.float64)) - LABEL_CENTER) / LABEL_SCALE
    cols = [np.ones(len(x))] + [x[:, i] for i in range(3)] + [x[:, i] * x[:, j] for i in range(3) for j in range(i, 3)]
    return np.column_stack(cols)


def fit_flux_model(flux, mask, labels, snr) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel least-squares coefficients (10, npix) and intrinsic scatter² (npix,).

    A pixel is fitted on the stars where it is usable (a pixel usable in fewer than 10 stars keeps a
    flat model at 1, the continuum). The scatter² is the residual variance less the stars' median
    noise variance, floored at 1e-6 so that a pixel the model fits perfectly does not blow χ² up.
    """
    flux = np.asarray(flux, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    A = design(labels)
    clean = ~mask.any(axis=0)
    coef = np.zeros((A.shape[1], flux.shape[1]))
    coef[0] = 1.0
    coef[:, clean] = np.linalg.lstsq(A, flux[:, clean], rcond=None)[0]
    for j in np.flatnonzero(~clean):  # few pixels are masked in some stars: one small fit each
        use = ~mask[:, j]
        if use.sum() >= 10:
            coef[:, j] = np.linalg.lstsq(A[use], flux[use, j], rcond=None)[0]
    resid = np.where(mask, np.nan, flux - A @ coef)
    noise2 = float(np.median(1.0 / np.asarray(snr, dtype=np.float64) ** 2))
    scatter2 = np.maximum(np.nan_to_num(np.nanmean(resid**2, axis=0), nan=1.0) - noise2, 1e-6)
    return coef, scatter2


def chi2(flux, mask, snr, labels, coef, scatter2) -> np.ndarray:
    """Mean χ² per row of the flux against the flux model at ``labels``, noise σ = 1/snr (see the module docstring)."""
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    mask = np.atleast_2d(np.asarray(mask, dtype=bool))
    model = design(labels) @ coef
    sigma2 = 1.0 / np.square(np.asarray(snr, dtype=np.float64))[:, None]
    r = (flux - model) ** 2 / (sigma2 + scatter2[None, :])
    good = (~mask).sum(axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(mask, 0.0, r).sum(axis=1) / np.maximum(good, 1)


@dataclass
class Detector:
    """A fitted detector: the flux model, the z-score centres and scales, and the threshold."""

    coef: np.ndarray
    scatter2: np.ndarray
    center: np.ndarray  # log χ², log embedding distance
    spread: np.ndarray
    threshold: float
    snr_floor: float = SNR_FLOOR
    model_sha256: str = ""
    #: The giants' own flux model (fitted on pseudo-labels), for inputs the network calls giant; None:
    #: every input is held against the dwarfs' model.
    coef_giant: np.ndarray | None = None
    scatter2_giant: np.ndarray | None = None
    #: The Teff range (K) of the stars the model was fine-tuned on; None: no range rule (older detectors).
    teff_range: tuple[float, float] | None = None
    outside_mass: float = OUTSIDE_MASS
    #: The outside-the-box classifier (:mod:`remap_lib.prediction.outsidebox`); None: novelty alone.
    box: outsidebox.BoxClassifier | None = None

    def chi2(self, flux, mask, snr, labels) -> np.ndarray:
        """χ² against the flux model of the class the labels fall in: giant (log g < 3.5) or dwarf."""
        labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        out = chi2(flux, mask, snr, labels, self.coef, self.scatter2)
        if self.coef_giant is not None:
            giant = labels[:, LABEL_NAMES.index("logg")] < GIANT_LOGG
            if giant.any():
                out[giant] = chi2(np.atleast_2d(flux)[giant], np.atleast_2d(mask)[giant],
                                  np.asarray(snr, dtype=np.float64)[giant], labels[giant], self.coef_giant,
                                  self.scatter2_giant)
        return out

    def features(self, flux, mask, snr, labels, distance) -> np.ndarray:
        """(n, 2): log χ² and log embedding distance (NaN when the model has no embedding reference)."""
        c = self.chi2(flux, mask, snr, labels)
        d = np.asarray(distance, dtype=np.float64)
        return np.column_stack([np.log(np.maximum(c, 1e-12)), np.log(d + _EPS_DIST)])

    def score(self, features) -> np.ndarray:
        """The larger of the two z-scores (the χ² one alone where the distance is NaN)."""
        z = (np.atleast_2d(features) - self.center) / self.spread
        return np.where(np.isnan(z[:, 1]), z[:, 0], np.fmax(z[:, 0], z[:, 1]))

    def mass_outside(self, teff_pmf, teff_centers) -> np.ndarray:
        """(n,) the share of each Teff PMF outside :attr:`teff_range` (zeros where there is no range)."""
        pmf = np.atleast_2d(np.asarray(teff_pmf, dtype=np.float64))
        if self.teff_range is None:
            return np.zeros(len(pmf))
        centers = np.asarray(teff_centers, dtype=np.float64)
        outside = (centers < self.teff_range[0]) | (centers > self.teff_range[1])
        return pmf[:, outside].sum(axis=1) / np.maximum(pmf.sum(axis=1), 1e-300)

    def outside_range(self, mass_outside) -> np.ndarray:
        """``teff_outside_range``: the Teff PMF mostly outside the fine-tuning range (see :data:`OUTSIDE_MASS`)."""
        return np.asarray(mass_outside) > self.outside_mass

    def flag(self, score, snr) -> np.ndarray:
        """``out_of_domain``: the score over the threshold or the S/N under the floor."""
        return (np.asarray(score) > self.threshold) | (np.asarray(snr) < self.snr_floor)

    def save(self, path) -> Path:
        path = Path(path)
        with atomic_write(path, "wb") as fh:
            giant = {} if self.coef_giant is None else {"coef_giant": self.coef_giant.astype(np.float32),
                                                        "scatter2_giant": self.scatter2_giant.astype(np.float32)}
            np.savez(fh, coef=self.coef.astype(np.float32), scatter2=self.scatter2.astype(np.float32),
                     center=self.center, spread=self.spread, threshold=self.threshold, snr_floor=self.snr_floor,
                     model_sha256=self.model_sha256, **giant,
                     **({} if self.teff_range is None else {"teff_range": np.asarray(self.teff_range, np.float64),
                                                            "outside_mass": self.outside_mass}),
                     **({} if self.box is None else self.box.arrays()))
        return path

    @classmethod
    def load(cls, path) -> Detector:
        with np.load(path) as z:
            giant = [z[k].astype(np.float64) if k in z.files else None for k in ("coef_giant", "scatter2_giant")]
            edges = ({"teff_range": tuple(float(t) for t in z["teff_range"]), "outside_mass": float(z["outside_mass"])}
                     if "teff_range" in z.files else {})
            return cls(z["coef"].astype(np.float64), z["scatter2"].astype(np.float64), z["center"], z["spread"],
                       float(z["threshold"]), float(z["snr_floor"]), str(z["model_sha256"]), *giant, **edges,
                       box=outsidebox.BoxClassifier.from_arrays(z))


def detector_path(model_path) -> Path:
    """Where the detector of a model file lives: ``<model>.ood.npz`` next to it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".ood.npz")


def robust_scale(features) -> tuple[np.ndarray, np.ndarray]:
    """Median and 1.4826 × MAD per column (a normal's σ), floored so a constant column cannot divide by 0."""
    f = np.asarray(features, dtype=np.float64)
    center = np.nanmedian(f, axis=0)
    spread = 1.482602 * np.nanmedian(np.abs(f - center), axis=0)
    return center, np.maximum(np.nan_to_num(spread, nan=1.0), 1e-3)


def roc(in_domain, outliers) -> dict:
    """ROC of a score where larger means out of domain: false- and true-positive rates at every
    threshold (scores of both samples, descending), and the AUC (Mann–Whitney U / n₁n₀, ties ½)."""
    from scipy.stats import mannwhitneyu

    a = np.asarray(in_domain, dtype=np.float64)
    b = np.asarray(outliers, dtype=np.float64)
    thresholds = np.unique(np.concatenate([a, b]))[::-1]
    fpr = [0.0] + [float(np.mean(a >= t)) for t in thresholds]
    tpr = [0.0] + [float(np.mean(b >= t)) for t in thresholds]
    auc = float(mannwhitneyu(b, a).statistic / (a.size * b.size)) if a.size and b.size else float("nan")
    return {"fpr": fpr, "tpr": tpr, "thresholds": [float("inf")] + [float(t) for t in thresholds], "auc": auc}


# -- the measurement ---------------------------------------------------------------------------------
def _network_features(predictor, prep):
    """Median labels, embedding distance, S/N, the unwidened PMFs ``{label: (n, nbins)}`` and the embedding
    of prepared rows (every row must have worked)."""
    from remap_lib.prediction.inference import row_snr

    bad = [e for e in prep.errors if e]
    if bad:
        raise RuntimeError(f"a spectrum failed: {bad[0]}")
    snr, _ = row_snr(prep.flux, prep.mask, prep.ivar)
    # the unwidened PMFs: predict's medians and its Teff range test read them (widening moves neither)
    pmfs, emb = predictor.network(prep.flux, prep.mask)
    medians = np.column_stack([predictor.bins[n].decode(pmfs[n])["median"] for n in LABEL_NAMES])
    return medians, predictor.ood_distance(emb), snr, pmfs, emb


def oof_chi2(flux, mask, labels, snr, medians, folds: int = 5, seed: int = 0) -> np.ndarray:
    """χ² of each star at its predicted labels against a flux model fitted without it (``folds``-fold)."""
    out = np.empty(len(flux))
    order = np.random.default_rng(seed).permutation(len(flux))
    for part in np.array_split(order, folds):
        train = np.setdiff1d(order, part)
        coef, s2 = fit_flux_model(flux[train], mask[train], labels[train], snr[train])
        out[part] = chi2(flux[part], mask[part], snr[part], medians[part], coef, s2)
    return out


def measure(model=None, seed: int = 0, classes=None, save_detector: bool = True, progress: bool = True,
            unlabelled=(GIANTS,)) -> dict:
    """Fit the detector on the fine-tuning and validation stars, save it next to the model, evaluate every class.

    ``classes``: ``{name: (labels, [spectrum...])}`` with at least "finetune", "validation" and
    "calibration" (default: :func:`~remap_lib.prediction.oodinputs.measurement_classes`, MILES and the
    made-up inputs). The classes named in ``unlabelled`` that are present are in the domain too: their
    spectra join the flux model with the labels the network gives them (pseudo-labels: their literature
    labels are never read), their χ² is out of fold, and their scores join those that set the threshold.
    Their reported flag rate is then an in-domain false-flag rate, like the calibration stars'.

    Where the classes hold at least :data:`MIN_OUTSIDE` stars of :data:`OUTSIDE_BOX`, the detector also
    gets the outside-the-box classifier (:mod:`remap_lib.prediction.outsidebox`), fitted on them against
    the in-domain classes. Those classes' reported flags are then nested cross-validated: no star is
    flagged by a classifier fitted to it.
    """
    from remap_lib.prediction.inference import Predictor

    predictor = Predictor(model)
    predictor.detector = None  # features from the network alone, whatever is saved now
    classes = measurement_classes(seed) if classes is None else classes
    feats = {}
    for name, (labels, spectra, *options) in classes.items():
        kw = {"medium": predictor.instrument.medium, "rv": 0.0, **(options[0] if options else {})}  # at rest
        prep = predictor.prepare(spectra, **kw)
        ok = np.array([not e for e in predictor.refusals(prep)])  # what predict would refuse is refused here
        med, dist, snr, pmfs, emb = _network_features(predictor, _subset(prep, ok))
        feats[name] = {"labels": np.asarray(labels)[ok], "prep": _subset(prep, ok), "medians": med, "dist": dist,
                       "snr": snr, "pmfs": pmfs, "embedding": emb, "failed": int((~ok).sum())}
        if progress:
            print(f"{name}: {ok.sum()} spectra ({(~ok).sum()} refused by predict)")
    pseudo = [n for n in unlabelled if n in feats]
    logg = LABEL_NAMES.index("logg")
    ft = feats["finetune"]
    coef, scatter2 = fit_flux_model(ft["prep"].flux, ft["prep"].mask, ft["labels"], ft["snr"])
    det = Detector(coef, scatter2, np.zeros(2), np.ones(2), 0.0, SNR_FLOOR, predictor.sha256, teff_range=FGK_TEFF)
    # Out of fold: no star's χ² comes from a flux model fitted to it. The fine-tuning stars make the
    # dwarfs' model with their literature labels; the unlabelled stars the network calls giant make
    # the giants' own model with the network's labels. ``oof``: class -> (rows fitted, their χ²).
    oof = {"finetune": (np.ones(len(ft["snr"]), bool),
                        oof_chi2(ft["prep"].flux, ft["prep"].mask, ft["labels"], ft["snr"], ft["medians"], seed=seed))}
    called = {n: feats[n]["medians"][:, logg] < GIANT_LOGG for n in pseudo}
    if sum(int(c.sum()) for c in called.values()) >= MIN_PSEUDO_LABELLED:
        flux = np.concatenate([feats[n]["prep"].flux[called[n]] for n in pseudo])
        mask = np.concatenate([feats[n]["prep"].mask[called[n]] for n in pseudo])
        labels = np.concatenate([feats[n]["medians"][called[n]] for n in pseudo])
        snr = np.concatenate([feats[n]["snr"][called[n]] for n in pseudo])
        det.coef_giant, det.scatter2_giant = fit_flux_model(flux, mask, labels, snr)
        parts = np.split(oof_chi2(flux, mask, labels, snr, labels, seed=seed),
                         np.cumsum([called[n].sum() for n in pseudo])[:-1])
        for n, part in zip(pseudo, parts, strict=True):
            full = np.full(len(called[n]), np.nan)
            full[called[n]] = part
            oof[n] = (called[n], full)
        # fine-tuning stars the network calls giant are held against the giants' model, never fitted on them
        oof["finetune"] = (ft["medians"][:, logg] >= GIANT_LOGG, oof["finetune"][1])
    raw = {}
    for name, f in feats.items():
        c = det.chi2(f["prep"].flux, f["prep"].mask, f["snr"], f["medians"])
        if name in oof:
            rows, values = oof[name]
            c[rows] = values[rows]
        raw[name] = np.column_stack([np.log(np.maximum(c, 1e-12)), np.log(f["dist"] + _EPS_DIST)])
    # Embedding distances of fine-tuning stars are 0 (they are in the reference): only validation
    # stars give that feature's in-domain spread; χ² comes from both.
    fitted = np.concatenate([raw["finetune"], raw["validation"]])
    center, spread = robust_scale(fitted)
    c1, s1 = robust_scale(raw["validation"][:, 1:])
    center[1], spread[1] = c1[0], s1[0]
    det.center, det.spread = center, spread
    chi_only = np.column_stack([raw["finetune"][:, 0], np.full(len(raw["finetune"]), np.nan)])
    fit_scores = np.concatenate([det.score(chi_only), det.score(raw["validation"])]
                                + [det.score(raw[n]) for n in pseudo])
    det.threshold = float(np.quantile(fit_scores, QUANTILE))
    novelty = {name: det.flag(det.score(raw[name]), f["snr"]) for name, f in feats.items()}
    box_flags, box_info = _fit_box(det, feats, raw, novelty, ("finetune", "validation", "calibration", *pseudo), seed)
    report = {"model": predictor.path.name, "model_sha256": predictor.sha256, "seed": seed,
              "rule": (f"score = max(z(log chi2), z(log ood_distance)) > {det.threshold:.3f} (the {QUANTILE:g} "
                       f"quantile of {len(fit_scores)} fine-tuning (out of fold), validation"
                       + "".join(f" and {n} (pseudo-labels, out of fold)" for n in pseudo)
                       + f" stars), or S/N < {SNR_FLOOR:g}"
                       + ("" if det.box is None else
                          f", or the outside-the-box classifier's log-odds > {det.box.threshold:.3f} (C = "
                          f"{det.box.c:g}; together at most {outsidebox.RATE:g} of the in-domain stars not "
                          "fine-tuned on, out of fold)")
                       + "; flag teff_outside_range: more than "
                       f"{det.outside_mass:g} of the Teff PMF outside {det.teff_range[0]:g}-{det.teff_range[1]:g} K"),
              "teff_range": list(det.teff_range), "outside_mass": det.outside_mass,
              "threshold": det.threshold, "snr_floor": SNR_FLOOR, "quantile": QUANTILE,
              "center": center.tolist(), "spread": spread.tolist(), "fitted_on": ["finetune", "validation", *pseudo],
              "unlabelled": pseudo,
              "other_library": (f"'{OTHER_LIBRARY}': {len(feats[OTHER_LIBRARY]['labels'])} PySME spectra over "
                                "Kurucz ATLAS9 atmospheres (data/kurucz_testset_r11000.h5, remap_lib.data.kurucztest)"
                                if OTHER_LIBRARY in feats else
                                "none: the Kurucz test set (python -m remap_lib.data.kurucztest) is not built here; "
                                "the pretraining grid's held-out FGK dwarfs stand in"),
              "box": box_info, "classes": {}}
    reference = det.score(raw["calibration"])
    for name, f in feats.items():
        s = det.score(raw[name])
        in_range = ~det.outside_range(det.mass_outside(f["pmfs"]["teff"], predictor.bins["teff"].centers))
        by_box = box_flags.get(name, np.zeros(len(s), bool))
        flagged = novelty[name] | by_box
        old = (f["dist"] > float(predictor.ood_threshold) if predictor.ood_threshold is not None
               else np.zeros(len(s), bool))
        entry = {"n": int(len(s)), "refused": f["failed"], "flagged": float(np.mean(flagged)) if len(s) else None,
                 "flagged_by_score": float(np.mean(s > det.threshold)) if len(s) else None,
                 "flagged_by_snr": float(np.mean(f["snr"] < SNR_FLOOR)) if len(s) else None,
                 "flagged_by_box": float(np.mean(by_box)) if len(s) else None,
                 "teff_outside_range": float(np.mean(~in_range)) if len(s) else None,
                 "flagged_or_outside_range": float(np.mean(flagged | ~in_range)) if len(s) else None,
                 # literature Teff of the stars the range rule flags (evaluation only: never fitted on)
                 "teff_of_outside_range": sorted(float(t) for t in f["labels"][~in_range, 0] if np.isfinite(t)),
                 "teff_of_flagged": sorted(float(t) for t in f["labels"][flagged, 0] if np.isfinite(t)),
                 "flagged_before": float(np.mean(old)) if len(s) else None,
                 "median_score": float(np.median(s)) if len(s) else None,
                 "median_snr": float(np.median(f["snr"])) if len(s) else None}
        if name not in ("finetune", "validation", "calibration", *pseudo) and len(s):
            curve = roc(reference, s)
            entry["auc"] = curve["auc"]
            entry["roc"] = {k: curve[k] for k in ("fpr", "tpr")}
        report["classes"][name] = entry
        if progress:
            print(f"  {name:42s} n={entry['n']:4d} flagged {entry['flagged']:.2f} (embedding threshold alone: "
                  f"{entry['flagged_before']:.2f})" + (f" AUC {entry['auc']:.3f}" if "auc" in entry else ""))
    for key, names in (("outside_box", OUTSIDE_BOX), ("in_domain", ("validation", "calibration", *pseudo))):
        entries = [report["classes"][n] for n in names if n in report["classes"] and report["classes"][n]["n"]]
        if entries:
            total = sum(e["n"] for e in entries)
            report[key] = {"n": total, "classes": [n for n in names if n in report["classes"]],
                           "flagged": sum(e["flagged"] * e["n"] for e in entries) / total,
                           "flagged_or_outside_range": sum(e["flagged_or_outside_range"] * e["n"]
                                                           for e in entries) / total}
    if save_detector:
        report["detector_file"] = det.save(detector_path(predictor.path)).name
    return report


def _fit_box(det: Detector, feats: dict, raw: dict, novelty: dict, inside, seed: int) -> tuple[dict, dict | None]:
    """Fit the outside-the-box classifier onto ``det`` where there are enough outside stars.

    Returns each class's classifier flags (nested cross-validated for the classes it is fitted on, the
    shipped classifier's for the rest) and the report's ``box`` entry (None: no classifier).
    """
    features = {n: outsidebox.box_features(f["pmfs"], raw[n][:, 0], f["embedding"]) for n, f in feats.items()}
    inside = [n for n in inside if n in feats and len(feats[n]["snr"])]
    outside = [n for n in OUTSIDE_BOX if n in feats and len(feats[n]["snr"])]
    if sum(len(feats[n]["snr"]) for n in outside) < MIN_OUTSIDE:
        det.box = None
        return {}, None
    names = inside + outside
    sizes = [len(feats[n]["snr"]) for n in names]
    x = np.concatenate([features[n] for n in names])
    y = np.repeat([n in outside for n in names], sizes)
    groups = np.repeat(np.arange(len(names)), sizes)
    nov = np.concatenate([novelty[n] for n in names])
    budget = np.repeat([n in inside and n != "finetune" for n in names], sizes)  # stars it was not trained on
    cv = outsidebox.cross_validated_flags(x, y, nov, groups, seed, budget=budget)
    det.box, info = outsidebox.fit(x, y, nov, groups, seed, budget=budget)
    flags = {n: det.box.flag(features[n]) for n in feats}
    flags.update(zip(names, np.split(cv["flags"], np.cumsum(sizes)[:-1]), strict=True))
    curve = roc(cv["scores"][~y], cv["scores"][y])
    # the fold assignment moves the rates: the same nested cross-validation with other fold seeds
    replicates = []
    for s in range(seed, seed + REPLICATES):
        run = cv if s == seed else outsidebox.cross_validated_flags(x, y, nov, groups, s, budget=budget)
        flagged = run["flags"] | nov
        replicates.append({"seed": s, "outside_box": float(flagged[y].mean()),
                           "in_domain": float(flagged[budget].mean())})
    entry = {"features": "the unwidened Teff, log g and [Fe/H] PMFs, log chi2 and the embedding "
                         f"({x.shape[1]} columns)",
             "inside": inside, "outside": outside, "n_inside": int((~y).sum()), "n_outside": int(y.sum()),
             "rate": outsidebox.RATE, "rate_counted_on": [n for n in inside if n != "finetune"],
             "c": det.box.c, "threshold": det.box.threshold,
             "c_grid": list(outsidebox.C_GRID), "detected_by_c": {f"{c:g}": v for c, v in info["detected"].items()},
             "nested_c": cv["c"], "auc": curve["auc"],
             "roc": {k: curve[k] for k in ("fpr", "tpr")}, "replicates": replicates,
             "auc_by_class": {n: roc(cv["scores"][~y], cv["scores"][groups == k])["auc"]
                              for k, n in enumerate(names) if n in outside}}
    return flags, entry


def _subset(prep, keep):
    from remap_lib.prediction.preparation import Prepared

    idx = np.flatnonzero(keep)
    return Prepared(prep.flux[idx], prep.mask[idx], [prep.source[i] for i in idx], [prep.name[i] for i in idx],
                    [prep.errors[i] for i in idx], [prep.notes[i] for i in idx],
                    None if prep.ivar is None else prep.ivar[idx], None if prep.rv is None else prep.rv[idx])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.prediction.ood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--out", default="results/ood.json", help="report (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = measure(args.model, seed=args.seed)
    write_json(args.out, report)
    print(report["rule"])
    return report


if __name__ == "__main__":
    main()

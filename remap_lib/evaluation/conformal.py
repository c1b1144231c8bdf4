"""Conformal interval scaling: widen or narrow each interval about its median until it covers as stated.

The network's 68 % and 95 % intervals are quantiles of its PMF. Temperature scaling fits one width
per label by likelihood, and one temperature cannot make both levels cover (the study's coverage
rows). Here each level gets its own factor, fitted to coverage itself, as in conformalized quantile
regression (Romano, Patterson & Candès 2019, NeurIPS) with a normalized score:

    score_i = (y_i − median_i) / (upper_i − median_i)   if y_i ≥ median_i
              (median_i − y_i) / (median_i − lower_i)   otherwise

and the level's factor is the ⌈(n + 1) c⌉-th smallest score of n calibration stars (c = 0.68 or
0.95): scaling every interval's two half-widths by it covers a fraction ≥ c of exchangeable new
stars. The intervals keep their shape and their star-to-star width (a noisy spectrum's stays wider).

The factors are fitted on dwarfs and hold for stars like them (conformal coverage needs the new
stars to be exchangeable with the calibration stars): they are fitted on, and applied to, only the
stars the network calls dwarfs (median log g ≥ :data:`~remap_lib.constants.GIANT_LOGG`). A star called
a giant keeps the PMF's own intervals, since no labelled giant was there to calibrate them.

In the study (:func:`cross_fold_predictions`), fold k's factors are fitted on the held-out
predictions of the other folds' dwarfs, never on fold k's own, so every reported interval is
calibrated out of sample (the cross-fold variant of split conformal; Barber et al. 2021, Ann.
Stat. 49, 486, bound its coverage for the jackknife+ / CV+ family).
"""

from __future__ import annotations

import numpy as np

from remap_lib.constants import GIANT_LOGG, LABEL_NAMES
from remap_lib.nn.binning import QUANTILES

#: Each central interval: its ends among the quantiles and its nominal coverage.
LEVELS = {"68": ("p16", "p84", 0.68), "95": ("p2_5", "p97_5", 0.95)}
_Q = tuple(QUANTILES)


def called_dwarf(pred: np.ndarray) -> np.ndarray:
    """(n,) whether each star of ``pred`` (n, 3, 5) is called a dwarf: the stars the factors are for."""
    with np.errstate(invalid="ignore"):
        return pred[:, LABEL_NAMES.index("logg"), _Q.index("median")] >= GIANT_LOGG


def interval_scores(pred: np.ndarray, truth: np.ndarray, level: str) -> np.ndarray:
    """Normalized scores (n, 3) of ``truth`` (n, 3) against predictions ``pred`` (n, 3, 5) at ``level``.

    1 is the interval's own end; NaN where the truth or the interval is missing; a zero half-width
    with the truth beyond the median scores inf (no factor can cover it).
    """
    lo_name, hi_name, _ = LEVELS[level]
    med, lo, hi = (pred[..., _Q.index(q)] for q in ("median", lo_name, hi_name))
    above = truth >= med
    half = np.where(above, hi - med, med - lo)
    dist = np.abs(truth - med)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(dist == 0, 0.0, dist / half)
    return np.where(np.isfinite(truth) & np.isfinite(med) & np.isfinite(half), score, np.nan)


def fit_factors(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per level, the factor per label (3,) that makes the scaled intervals of the stars called dwarfs
    (:func:`called_dwarf`) cover as stated. NaN for a label with no usable star.
    """
    out = {}
    dwarf = called_dwarf(pred)
    pred, truth = pred[dwarf], truth[dwarf]
    for level, (_, _, coverage) in LEVELS.items():
        scores = interval_scores(pred, truth, level)
        factors = []
        for j in range(scores.shape[1]):
            s = np.sort(scores[np.isfinite(truth[:, j]) & ~np.isnan(scores[:, j]), j])
            n = len(s)
            rank = int(np.ceil((n + 1) * coverage))  # the finite-sample correction of split conformal
            factors.append(np.nan if n == 0 else s[min(rank, n) - 1])
        out[level] = np.asarray(factors, dtype=np.float64)
    return out


def scale_intervals(pred: np.ndarray, factors: dict[str, np.ndarray]) -> np.ndarray:
    """``pred`` (n, 3, 5) with each level's half-widths multiplied by its factors, (3,) or one row per
    star (n, 3), for the stars called dwarfs; medians, and the stars called giants, unchanged."""
    out = np.array(pred, dtype=np.float64, copy=True)
    dwarf = called_dwarf(out)[:, None]
    med = out[..., _Q.index("median")]
    for level, (lo_name, hi_name, _) in LEVELS.items():
        f = np.where(dwarf, np.asarray(factors[level], dtype=np.float64), 1.0)
        lo, hi = _Q.index(lo_name), _Q.index(hi_name)
        out[..., lo] = med - f * (med - out[..., lo])
        out[..., hi] = med + f * (out[..., hi] - med)
    return out


def cross_fold_predictions(fold_of: np.ndarray, dwarfs: np.ndarray, truth: np.ndarray,
                           others: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, dict, dict]:
    """Cross-fold conformal intervals for one seed of the study.

    ``fold_of`` (n,): each dwarf's fold; ``dwarfs`` (n, 3, 5): its held-out prediction; ``truth``
    (n, 3); ``others``: fold -> predictions of other stars by that fold's model (the giants).
    Returns the dwarfs' scaled predictions, the others' scaled predictions and the factors per fold
    (each fitted on the dwarfs of the other folds only).
    """
    scaled = np.full_like(np.asarray(dwarfs, dtype=np.float64), np.nan)
    factors, other_scaled = {}, {}
    for fold in sorted(set(int(f) for f in fold_of)):
        inside = fold_of == fold
        factors[fold] = fit_factors(dwarfs[~inside], truth[~inside])
        scaled[inside] = scale_intervals(dwarfs[inside], factors[fold])
        if others is not None and fold in others:
            other_scaled[fold] = scale_intervals(others[fold], factors[fold])
    return scaled, other_scaled, factors


def study_factors(records_dir, row: str, folds) -> dict:
    """Factors for a model built with ``row``'s recipe, from the study's cross-validated predictions of it.

    Every complete seed's held-out dwarfs are pooled, the calibration stars left out (they are the
    stars the shipped model is reported on). Returns the factors per level and label, the numbers
    of stars and seeds, and the coverage of the pooled intervals before and after.
    """
    from remap_lib.evaluation.studystats import collect, label_metrics, load_records, row_tables

    entries = collect([r for r in load_records(records_dir) if row in r["predictions"]])
    if row not in entries:
        raise ValueError(f"{records_dir}: no study records of row {row!r}: run `remap study run --rows '{row}'`")
    giants = sorted({i for parts in entries[row]["seeds"].values() for part in parts["giants"].values()
                     for i in part["id"]})
    table = row_tables(entries[row], folds, giants)["cv_dwarfs"]
    seeds = sorted(table["seeds"])
    if not seeds:
        raise ValueError(f"{records_dir}: row {row!r} has no complete seed (every fold recorded)")
    keep = (folds["role"] != "calibration").to_numpy()
    pred = np.concatenate([table["seeds"][s][0][keep] for s in seeds])
    truth = np.concatenate([table["truth"][keep]] * len(seeds))
    factors = fit_factors(pred, truth)

    def coverage(p):  # the study's own metric, per level
        metrics = label_metrics(p, truth)
        return {level: metrics[f"coverage{level}"].tolist() for level in LEVELS}

    scaled = scale_intervals(pred, factors)
    return {"row": row, "n_stars": int(keep.sum()), "n_seeds": len(seeds), "factors": factors,
            "coverage_before": coverage(pred), "coverage_after": coverage(scaled)}


def clean_dwarf_snr(folds, profile: str = "default") -> float:
    """Median S/N per pixel (DER_SNR, as ``predict`` measures it) of the study's dwarfs as they are: the
    S/N the clean factors were fitted at, the highest node of the per-S/N factors."""
    from remap_lib.data.dataset import read_dataset
    from remap_lib.training.trainsets import der_snr_noise, prepared

    data = read_dataset(prepared(profile, progress=False)["miles"])
    ids = set(folds["id"].astype(str))
    rows = np.array([str(i) in ids for i in data.ids])
    noise = der_snr_noise(np.where(data.mask[rows], 1.0, data.flux[rows]))
    return float(np.median(1.0 / noise[np.isfinite(noise) & (noise > 0)]))


def table_coverage(table, labels: np.ndarray) -> dict:
    """Per level and label, the share of ``labels`` (n, 3) inside a prediction table's intervals."""
    out = {}
    for level, (lo, hi, _) in LEVELS.items():
        out[level] = {}
        for j, name in enumerate(LABEL_NAMES):
            y, known = labels[:, j], np.isfinite(labels[:, j])
            inside = (y >= np.asarray(table[f"{name}_{lo}"])) & (y <= np.asarray(table[f"{name}_{hi}"]))
            out[level][name] = float(np.mean(inside[known]))
    return out


#: S/N per pixel of noisy copies :func:`measure_model` scores beyond the study's degraded ones
#: (:data:`~remap_lib.evaluation.studyrows.DEGRADED_SNR`, where the factors are fitted): issue 13 checks the
#: intervals at S/N 50, 20, 10 and 5, and below the lowest fitted S/N the factors are held.
EXTRA_MEASURED_SNR = (50.0, 5.0)


def measured_snr() -> tuple[float, ...]:
    """Every S/N :func:`measure_model` degrades to by default, highest first."""
    from remap_lib.evaluation.studyrows import DEGRADED_SNR

    return tuple(sorted({*DEGRADED_SNR, *EXTRA_MEASURED_SNR}, reverse=True))


def measure_model(model=None, roles=("calibration", "giant_candidate"), stars=None, snrs=None,
                  seed: int = 0) -> dict:
    """Coverage of a model's intervals with and without its interval factors, on MILES stars of ``roles``
    read from their files as a user's would be (``stars``: role -> (labels, spectra); default MILES),
    as they are and degraded to each S/N of ``snrs`` (:func:`remap_lib.evaluation.robustness.add_noise`,
    one draw per star; ``predict`` then also widens the PMFs for the noise)."""
    from dataclasses import replace

    from remap_lib.evaluation.robustness import add_noise
    from remap_lib.prediction.inference import Predictor

    if stars is None:
        from remap_lib.evaluation.coverage import miles_stars as stars
    snrs = measured_snr() if snrs is None else snrs
    predictor = Predictor(model)
    fitted = predictor.widening
    out = {"model": predictor.path.name, "model_sha256": predictor.sha256, "factors": fitted.intervals,
           "noise": {"snr": list(snrs), "seed": seed, "draws_per_star": 1}, "roles": {}}

    def both(spectra, labels):
        scaled = predictor.predict(spectra)
        predictor.widening = replace(fitted, intervals={})
        plain = predictor.predict(spectra)
        predictor.widening = fitted
        return {"called_dwarf": float(np.mean(np.asarray(plain["logg_median"]) >= GIANT_LOGG)),
                "before": table_coverage(plain, labels), "after": table_coverage(scaled, labels)}

    for role in roles:
        labels, spectra = stars(role)
        out["roles"][role] = {"n": len(labels), **both(spectra, labels), "at_snr": {}}
        for snr in snrs:
            rng = np.random.default_rng([seed, int(snr)])
            noisy = [add_noise(s[0], s[1], snr, rng) for s in spectra]
            out["roles"][role]["at_snr"][f"{snr:g}"] = both(noisy, labels)
    return out


def main(argv=None) -> dict:
    """Fit the shipped (or a given) model's interval factors from the study records of its recipe."""
    import argparse
    from pathlib import Path

    from remap_lib.evaluation.folds import read_folds
    from remap_lib.evaluation.studyrows import DEGRADED_SNR, SHIPPED_ROW, at_snr
    from remap_lib.fileio import sha256_file, write_json
    from remap_lib.paths import RESULTS_DIR
    from remap_lib.prediction.inference import default_model_path
    from remap_lib.prediction.widening import update_widening

    parser = argparse.ArgumentParser(prog="python -m remap_lib.evaluation.conformal",
                                     description=main.__doc__)
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--records", default=str(RESULTS_DIR / "study"),
                        help="the study's records (with folds.csv)")
    parser.add_argument("--row", default=SHIPPED_ROW,
                        help=f"the study row whose recipe built the model (default: remap's, {SHIPPED_ROW!r})")
    parser.add_argument("--out", default=str(RESULTS_DIR / "conformal.json"), help="report (JSON)")
    parser.add_argument("--no-measure", action="store_true",
                        help="only fit and write the factors (skip predicting the MILES calibration stars and giants)")
    args = parser.parse_args(argv)
    records = Path(args.records)
    folds = read_folds(records / "folds.csv")
    fit = study_factors(records, args.row, folds)
    model = Path(args.model) if args.model else default_model_path()

    def rounded(factors):  # 3 decimals: below what a few hundred stars pin a quantile to
        return {level: {n: round(float(f[j]), 3) for j, n in enumerate(LABEL_NAMES)} for level, f in factors.items()}

    values = rounded(fit["factors"])
    noisy = {}
    for snr in DEGRADED_SNR:  # the same recipe's networks on the study's noisier copies, where recorded
        try:
            noisy[snr] = study_factors(records, at_snr(args.row, snr), folds)
        except ValueError:  # no records of that row
            continue
    how = (f"python -m remap_lib.evaluation.conformal, study row {args.row!r}: {fit['n_stars']} cross-validated "
           f"dwarfs x {fit['n_seeds']} seeds, calibration stars left out")
    if noisy:
        clean_snr = clean_dwarf_snr(folds)
        steps = sorted(noisy, reverse=True)
        by_level = {level: {n: [values[level][n]] + [rounded(noisy[s]["factors"])[level][n] for s in steps]
                            for n in LABEL_NAMES} for level in LEVELS}
        values["by_snr"] = {"snr": [round(clean_snr, 2), *steps], **by_level}
        how += f"; at S/N {', '.join(f'{s:g}' for s in steps)} from its rows on noisier copies"
    saved = update_widening(model, sha256_file(model), "intervals", values, how)
    for level in LEVELS:
        print(f"{level} %: factors " + ", ".join(f"{n} {values[level][n]:.3f}" for n in LABEL_NAMES)
              + "; coverage " + ", ".join(f"{a:.3f} -> {b:.3f}" for a, b in
                                         zip(fit["coverage_before"][level], fit["coverage_after"][level], strict=True)))
    for snr, f in noisy.items():
        print(f"at S/N {snr:g}: " + "; ".join(f"{level} %: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(
            LABEL_NAMES, f["factors"][level], strict=True)) for level in LEVELS))
    print(f"wrote {saved}")
    report = {"fit": {**fit, "factors": values,
                      "at_snr": {f"{s:g}": {**f, "factors": rounded(f["factors"])} for s, f in noisy.items()}}}
    if not args.no_measure:
        report["measured"] = measure_model(model)
        for role, entry in report["measured"]["roles"].items():
            for where, e in (("own S/N", entry), *((f"S/N {k}", v) for k, v in entry["at_snr"].items())):
                for level in LEVELS:
                    print(f"{role} ({entry['n']} stars, {where}), {level} % coverage without -> with the factors: "
                          + ", ".join(f"{n} {e['before'][level][n]:.2f} -> {e['after'][level][n]:.2f}"
                                      for n in LABEL_NAMES))
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()

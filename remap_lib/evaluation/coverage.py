"""Spectra that miss part of the window: what it does to the model's answers, and the widening that fits it.

    python -m remap_lib.evaluation.coverage [--model M] [--out results/partial_coverage.json]

For MILES dwarfs of the validation and calibration roles the raw MILES spectra (3540–7410 Å) are
cut so that a share f of the model's window lies beyond the data, at the blue or at the red end,
and predicted as any user's spectrum would be (:meth:`remap_lib.prediction.inference.Predictor.prepare`,
which pads and masks the missing part). Per label and f the report gives the median 68 %
interval width and the median shift of the median from the uncut spectrum's, and the 68 % coverage
of the literature labels, before and after widening.

The widening (the ``missing`` part of the model's :mod:`remap_lib.prediction.widening` file, which
this command writes) multiplies the calibrated
temperatures by 1 + s·f. For each f the factor k that brings the interval coverage of the
*validation* stars closest to nominal (:func:`remap_lib.evaluation.calibrate.fit_coverage_temperature`: the
same criterion as the shipped calibration) is divided by the same fit at f = 0, and s is the least-
squares slope of k − 1 on f through the origin, floored at 0: missing data never sharpen a PMF.
The calibration-role stars are reported, never fitted on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.special import softmax

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.calibrate import fit_coverage_temperature
from remap_lib.fileio import write_json
from remap_lib.prediction.widening import recentre, update_widening
from remap_lib.spectra.preprocess import pixel_edges

#: Shares of the window cut away in the measurement; the largest is
#: :data:`remap_lib.prediction.preparation.MAX_MISSING`.
CUT_FRACTIONS = (0.0, 0.02, 0.05, 0.10)
#: Temperature factors tried in the fit, 1 % apart. Below 1 too: only the ratio to the fit at f = 0 is
#: used, and a model that over-covers at f = 0 would otherwise pin every fit at the floor.
WIDEN_GRID = np.geomspace(0.1, 4.0, 372)


def cut_spectrum(wave, flux, window, fraction: float, end: str):
    """``(wave, flux)`` without the pixels that lie wholly in the first (``end="blue"``) or last share
    ``fraction`` of ``window`` = (lo, hi) Å, so at most that share lies beyond the data."""
    wave = np.asarray(wave, dtype=np.float64)
    lo, hi = float(window[0]), float(window[1])
    edges = pixel_edges(wave)
    if end == "blue":
        keep = edges[1:] > lo + fraction * (hi - lo)
    elif end == "red":
        keep = edges[:-1] < hi - fraction * (hi - lo)
    else:
        raise ValueError(f"end must be 'blue' or 'red', got {end!r}")
    if fraction == 0:
        keep[:] = True
    return wave[keep], np.asarray(flux)[keep]


def ensemble_pmf(member_logits, name: str, factor=1.0) -> np.ndarray:
    """mean over members of softmax(z / factor) for label ``name``; ``factor`` scalar or one per row."""
    k = np.asarray(factor, dtype=np.float64)
    k = k[:, None] if k.ndim == 1 else k
    return np.mean([softmax(z[name] / k, axis=1) for z in member_logits], axis=0)


def fit_widening(logits_by_fraction: dict, missing: dict, labels: dict, bins, grid=WIDEN_GRID) -> dict:
    """Per label: the coverage-fitted factor at each cut and the slope s of ``k(f)/k(0) − 1`` on f.

    Each dict is keyed by the cut fraction: member logits ``[{label: (n, nbins)}]``, the measured
    masked share of the window of each row (n,) and the literature labels (n, 3) of those rows.
    ``grid``: the temperature factors tried. Returns ``{label: {"slope": s, "factors": {f: k}}}``.
    """
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        factors = {f: fit_coverage_temperature([z[name] for z in zs], labels[f][:, j], bins[name], grid=grid,
                                               recentre=True)  # as predict reads a widened PMF
                   for f, zs in logits_by_fraction.items()}
        base = factors.get(0.0, 1.0)
        x = np.array([float(np.mean(missing[f])) for f in factors if f > 0])
        y = np.array([factors[f] / base - 1.0 for f in factors if f > 0])
        slope = float(max(x @ y / (x @ x), 0.0)) if x.size and x @ x > 0 else 0.0
        out[name] = {"slope": slope, "factors": {str(f): float(k) for f, k in factors.items()}}
    return out


def miles_stars(role: str):
    """``(labels (n, 3), [(wave, flux)])`` of the MILES stars of ``role`` in the shipped splits, uncut."""
    from remap_lib.data.sources.miles import fetch_miles, read_miles_spectrum, spectrum_path
    from remap_lib.data.splits import read_splits

    table = read_splits()
    table = table[table["role"] == role].reset_index(drop=True)
    folder = fetch_miles()
    spectra = [read_miles_spectrum(spectrum_path(folder, int(i.lstrip("m")))) for i in table["id"]]
    return table[list(LABEL_NAMES)].to_numpy(dtype=np.float64), spectra


def _summary(member_logits, labels, bins, widen=None) -> dict:
    """Median, 68 % width and coverage per label, widened by ``widen`` as predict widens (recentred)."""
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        d = bins[name].decode(ensemble_pmf(member_logits, name))
        if widen is not None:
            d = recentre(bins[name].decode(ensemble_pmf(member_logits, name, widen[name])), d)
        inside = (labels[:, j] >= d["p16"]) & (labels[:, j] <= d["p84"])
        known = np.isfinite(labels[:, j])
        out[name] = {"median": d["median"], "width68": d["p84"] - d["p16"],
                     "coverage68": float(np.mean(inside[known]))}
    return out


def measure(model=None, fractions=CUT_FRACTIONS, progress: bool = True, stars=miles_stars) -> dict:
    """Cut MILES dwarfs' spectra, predict, fit the widening on the validation stars; a JSON-ready report.

    ``stars(role)`` gives ``(labels, [(wave, flux)])`` for "validation" (fitted on) and "calibration"
    (reported only); the spectra must reach beyond both ends of the model's window.
    """
    from remap_lib.prediction.inference import Predictor
    from remap_lib.prediction.preparation import MAX_MISSING

    predictor = Predictor(model)
    window = pixel_edges(predictor.wave)[[0, -1]]
    report = {"model": predictor.path.name, "model_sha256": predictor.sha256, "fractions": list(fractions),
              "window": [float(w) for w in window], "roles": {}}
    runs = {}
    for role in ("validation", "calibration"):
        labels, spectra = stars(role)
        runs[role] = {}
        for f in fractions:
            for end in (("blue",) if f == 0 else ("blue", "red")):
                cut = [cut_spectrum(w, fl, window, f, end) for w, fl in spectra]
                prep = predictor.prepare(cut, medium=predictor.instrument.medium, rv=0.0)  # at rest: no RV estimate
                bad = [e for e in prep.errors if e]
                if bad:
                    raise RuntimeError(f"{role} f={f} {end}: {bad[0]}")
                if prep.mask.mean(axis=1).max() > MAX_MISSING:  # predict would refuse such rows: not ours to fit
                    raise RuntimeError(f"{role} f={f} {end}: a cut leaves more than MAX_MISSING = {MAX_MISSING} of "
                                       "the window without data (edge pixels less than half covered are masked too)")
                runs[role][(f, end)] = (predictor.member_logits(prep.flux, prep.mask), prep.mask.mean(axis=1))
                if progress:
                    print(f"{role:11s} f={f:.2f} {end:4s}: missing {prep.mask.mean():.3f} of the window")
        runs[role]["labels"] = labels
    val = runs["validation"]
    pooled = {f: [{n: np.concatenate([val[(f, e)][0][m][n] for e in ("blue", "red") if (f, e) in val])
                   for n in LABEL_NAMES} for m in range(len(predictor.networks))] for f in fractions}
    missing = {f: np.concatenate([val[(f, e)][1] for e in ("blue", "red") if (f, e) in val]) for f in fractions}
    labels = {f: np.tile(val["labels"], (1 if f == 0 else 2, 1)) for f in fractions}
    fit = fit_widening(pooled, missing, labels, predictor.bins)
    report["fit_on"] = "validation"
    report["widening"] = fit
    for role, run in runs.items():
        labels = run["labels"]
        base = _summary(run[(0.0, "blue")][0], labels, predictor.bins)
        rows = []
        for (f, end), (zs, miss) in ((k, v) for k, v in run.items() if k != "labels"):
            before = _summary(zs, labels, predictor.bins)
            after = _summary(zs, labels, predictor.bins, {n: 1.0 + fit[n]["slope"] * miss for n in LABEL_NAMES})
            row = {"fraction": f, "end": end, "missing": float(np.mean(miss))}
            for name in LABEL_NAMES:
                row[name] = {
                    "width68": float(np.median(before[name]["width68"])),
                    "width68_widened": float(np.median(after[name]["width68"])),
                    "median_shift": float(np.median(before[name]["median"] - base[name]["median"])),
                    "abs_shift": float(np.median(np.abs(before[name]["median"] - base[name]["median"]))),
                    "coverage68": before[name]["coverage68"],
                    "coverage68_widened": after[name]["coverage68"],
                }
            rows.append(row)
        report["roles"][role] = {"n": int(len(labels)), "cuts": rows}
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.evaluation.coverage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--out", default="results/partial_coverage.json", help="report (JSON)")
    args = parser.parse_args(argv)
    report = measure(args.model)
    write_json(args.out, report)
    # 2 decimals: below the fit's precision
    slopes = {n: round(v["slope"], 2) for n, v in report["widening"].items()}
    saved = update_widening(args.model, report["model_sha256"], "missing", slopes,
                            f"python -m remap_lib.evaluation.coverage, report {Path(args.out).name}")
    for role, entry in report["roles"].items():
        print(f"{role} ({entry['n']} stars): f end  missing  " + "  ".join(
            f"{n}: w68 -> widened, shift, cov68 -> widened" for n in LABEL_NAMES))
        for row in entry["cuts"]:
            print(f"  {row['fraction']:.2f} {row['end']:4s} {row['missing']:.3f}  " + "  ".join(
                f"{row[n]['width68']:.3g}->{row[n]['width68_widened']:.3g} {row[n]['median_shift']:+.3g} "
                f"{row[n]['coverage68']:.2f}->{row[n]['coverage68_widened']:.2f}" for n in LABEL_NAMES))
    print("slopes s (T -> T·(1 + s·f)): " + ", ".join(f"{n} {v['slope']:.3f}" for n, v in report["widening"].items()))
    print(f"wrote {saved}: what predict widens by for this model")
    return report


if __name__ == "__main__":
    main()

"""What noise, flux calibration, radial velocity and resolution do to the shipped model's answers, measured.

    python -m remap_lib.evaluation.robustness noise   [--model M] [--out results/noise_widening.json]
    python -m remap_lib.evaluation.robustness curves  [--model M] [--out results/robustness.json]

``noise``: MILES validation and calibration dwarfs, degraded on their native pixels to S/N 50, 20,
10 and 5 per pixel (Gaussian noise, the ivar a pipeline would give: added plus the star's own
DER_SNR noise), two noise draws each. The S/N the model then measures (:func:`remap_lib.prediction.inference.row_snr`)
sets the widening: at each S/N the coverage-fitted temperature factor of the *validation* stars
(:func:`remap_lib.evaluation.calibrate.fit_coverage_temperature`), divided by the same fit on the clean
spectra, never below 1 and never smaller at a lower S/N, is one [S/N, factor] node; ``predict``
interpolates the nodes in log S/N. ``noise`` writes them into the model's widening file (the ``noise``
part, :mod:`remap_lib.prediction.widening`). The linear form T·(1 + c·max(0, 1/S/N − 1/50)) is
reported as tried. The calibration stars are
reported, never fitted on: 68 % coverage before and after, per label and S/N.

``curves``: the median over the 30 calibration stars of the change of each label's median
prediction against a smooth multiplicative tilt (a quadratic, up to ±30 % across the window), a
radial velocity (up to ±500 km/s, uncorrected and corrected by :func:`estimate_rv`), S/N, and an
LSF broader than the one assumed (MILES's 2.5 Å FWHM broadened, not declared); and the spread of
the RV estimates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from remap_lib.constants import C_KMS, FGK_TEFF, GIANT_LOGG, LABEL_NAMES
from remap_lib.fileio import write_json
from remap_lib.paths import RESULTS_DIR

#: S/N per pixel of the degraded copies (the issue's check).
NOISE_LEVELS = (50.0, 20.0, 10.0, 5.0)
#: Amplitudes of the multiplicative tilts: flux × (1 + a·shape(x)), x from −1 to 1 across the window.
TILT_AMPLITUDES = (-0.3, -0.15, 0.15, 0.3)
TILT_SHAPES = ("linear", "quadratic")
RV_VALUES = (-500.0, -300.0, -150.0, -50.0, -20.0, 20.0, 50.0, 150.0, 300.0, 500.0)
#: LSF FWHMs (Å) the MILES spectra are broadened to while the model is told nothing.
FWHM_VALUES = (3.0, 3.5, 4.0, 5.0)


def add_noise(wave, flux, snr: float, rng, window=(5000.0, 5700.0)):
    """``(wave, noisy flux, ivar)``: Gaussian noise σ = median(flux in ``window``)/``snr`` per pixel,
    ivar = 1/(σ² + σ₀²) with σ₀ the spectrum's own DER_SNR noise (what a pipeline would report)."""
    from remap_lib.training.trainsets import der_snr_noise

    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    inside = (wave >= window[0]) & (wave <= window[1])
    sigma = float(np.median(flux[inside])) / snr
    sigma0 = float(der_snr_noise(flux[inside])[0])
    noisy = flux + rng.normal(0.0, sigma, flux.size)
    return wave, noisy, np.full(flux.size, 1.0 / (sigma**2 + sigma0**2))


def tilt(wave, flux, amplitude: float, shape: str, window=(5000.0, 5700.0)):
    """``(wave, flux × (1 + amplitude·s(x)))`` with x = −1 … 1 across ``window`` and s(x) = x
    (``"linear"``) or 2x² − 1 (``"quadratic"``): ±``amplitude`` at the window's ends and middle, constant
    beyond them."""
    wave = np.asarray(wave, dtype=np.float64)
    # held at its end values beyond the window, so that a spectrum reaching far past it stays positive
    x = np.clip((2.0 * wave - window[0] - window[1]) / (window[1] - window[0]), -1.0, 1.0)
    s = {"linear": x, "quadratic": 2.0 * x**2 - 1.0}[shape]
    return wave, np.asarray(flux, dtype=np.float64) * (1.0 + amplitude * s)


def doppler(wave, flux, rv_kms: float):
    """The spectrum as seen at radial velocity ``rv_kms``: wavelengths × (1 + v/c)."""
    return np.asarray(wave, dtype=np.float64) * (1.0 + rv_kms / C_KMS), flux


def broaden(wave, flux, fwhm_from: float, fwhm_to: float):
    """Gaussian broadening of a linearly sampled spectrum from one LSF FWHM (Å) to a wider one."""
    from scipy.ndimage import gaussian_filter1d

    step = float(np.median(np.diff(wave)))
    sigma = np.sqrt(fwhm_to**2 - fwhm_from**2) / 2.3548 / step
    return wave, gaussian_filter1d(np.asarray(flux, dtype=np.float64), sigma, mode="nearest")


def estimate_rv(wave, flux, grid_wave, templates, vmax: float = 600.0, step: float = 10.0,
                min_covered: float = 0.8):
    """Radial velocity (km/s) by cross-correlation, and the peak correlation coefficient.

    ``templates`` (k, npix) are rest-frame, continuum-normalized spectra on ``grid_wave`` (Å, in the
    input's medium). The input, on its own pixels within ±``vmax`` of the window, is divided by a
    straight line through the medians of its first and last tenth; for each trial v the templates are
    read at λ/(1 + v/c) on those pixels and correlated (Pearson, over the pixels they cover, at least
    ``min_covered`` of the window's worth) with it. Shifting the templates, not the data, keeps the
    data's noise the same at every v (interpolating noisy data smooths it at fractional-pixel shifts
    and pulls the peak there). Trials every 4·``step`` over the range, then every ``step`` near the
    best; the best template's peak is refined by a parabola through it and its neighbours. NaN when no
    trial is covered enough, or the peak has no tried velocity on both sides.
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    grid_wave = np.asarray(grid_wave, dtype=np.float64)
    lo_w, hi_w = grid_wave[0] * (1 - vmax / C_KMS), grid_wave[-1] * (1 + vmax / C_KMS)
    good = np.isfinite(flux) & np.isfinite(wave) & (wave >= lo_w) & (wave <= hi_w)
    wave, flux = wave[good], flux[good]
    if wave.size < 20:
        return float("nan"), float("nan")
    n = max(wave.size // 10, 1)
    a, b = np.median(flux[:n]), np.median(flux[-n:])
    wa, wb = wave[:n].mean(), wave[-n:].mean()
    cont = a + (b - a) * (wave - wa) / (wb - wa) if wb > wa else np.full(wave.size, a)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = flux / cont - 1.0
    if not np.all(np.isfinite(g)):
        return float("nan"), float("nan")
    nominal = (grid_wave[-1] - grid_wave[0]) / float(np.median(np.diff(wave)))
    templates = np.asarray(templates, dtype=np.float64)

    def correlate(vs):
        """Best Pearson r over the templates at each trial velocity (−inf where too little is covered)."""
        rest = wave[None, :] / (1.0 + vs[:, None] / C_KMS)  # (n_v, n_pix): each pixel's rest wavelength
        use = (rest >= grid_wave[0]) & (rest <= grid_wave[-1])
        count = use.sum(axis=1)
        t = np.stack([np.interp(rest, grid_wave, tk) for tk in templates])  # (k, n_v, n_pix)
        w = use.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            gc = np.where(use, g - ((w * g).sum(axis=1) / count)[:, None], 0.0)
            tc = np.where(use, t - ((t * w).sum(axis=2) / count)[:, :, None], 0.0)
            r = (tc * gc).sum(axis=2) / np.sqrt((tc**2).sum(axis=2) * (gc**2).sum(axis=1))  # (k, n_v)
        r = np.where(np.isfinite(r), r, -np.inf).max(axis=0)
        return np.where(count >= min_covered * nominal, r, -np.inf)

    # coarse (4 steps) over the whole range, then every step around the coarse peak: ~half the trials
    coarse = np.arange(-vmax, vmax + step / 2, 4 * step)
    best = correlate(coarse)
    if not np.isfinite(best).any():
        return float("nan"), float("nan")
    centre = coarse[int(np.argmax(best))]
    vs = np.arange(max(centre - 4 * step, -vmax), min(centre + 4 * step, vmax) + step / 2, step)
    best = correlate(vs)
    k = int(np.argmax(best))
    if not (0 < k < vs.size - 1 and np.isfinite(best[k - 1]) and np.isfinite(best[k + 1])):
        return float("nan"), float(best[k])  # the peak is at the edge of what could be tried: no estimate
    a, b, c = best[k - 1], best[k], best[k + 1]
    denom = a - 2 * b + c
    v = vs[k] + (0.5 * step * (a - c) / denom if denom < 0 else 0.0)
    return float(v), float(best[k])


def rv_templates(detector, labels=None) -> np.ndarray:
    """Templates for :func:`estimate_rv`: the detector's flux model (fitted to the fine-tuning
    stars) at six FGK dwarf labels: 4500, 5500 and 6500 K, [Fe/H] −1 and 0."""
    from remap_lib.prediction.ood import design

    if labels is None:
        labels = [(t, 4.4, m) for t in (4500.0, 5500.0, 6500.0) for m in (-1.0, 0.0)]
    return design(np.asarray(labels)) @ detector.coef


# -- measurements ----------------------------------------------------------------------------------
def _medians(predictor, spectra, **kw):
    """(n, 3) medians of the prediction and the table, through :meth:`Predictor.predict`; ``rv`` 0
    (taken at rest, no estimate) unless given: each curve isolates one alteration."""
    kw.setdefault("rv", 0.0)
    table = predictor.predict(spectra, medium=predictor.instrument.medium, **kw)
    bad = [e for e in table["error"] if e]
    if bad:
        raise RuntimeError(f"a spectrum failed: {bad[0]}")
    return np.column_stack([np.asarray(table[f"{n}_median"], dtype=np.float64) for n in LABEL_NAMES]), table


def measure_noise(model=None, levels=NOISE_LEVELS, draws: int = 2, seed: int = 0, stars=None,
                  progress: bool = True) -> dict:
    """Degrade, predict, fit the noise widening on the validation stars; a JSON-ready report (module docstring).

    ``stars(role)`` gives ``(labels, [(wave, flux)])``
    (default: MILES, :func:`remap_lib.evaluation.coverage.miles_stars`).
    """
    from remap_lib.evaluation.calibrate import fit_coverage_temperature
    from remap_lib.evaluation.coverage import WIDEN_GRID, _summary
    from remap_lib.prediction.inference import Predictor, row_snr
    from remap_lib.prediction.widening import noise_inflation

    NOISE_REFERENCE_SNR = 50.0  # noqa: N806 - the reference of the linear form tried

    if stars is None:
        from remap_lib.evaluation.coverage import miles_stars as stars
    from remap_lib.spectra.preprocess import pixel_edges

    predictor = Predictor(model)
    window = tuple(float(x) for x in pixel_edges(predictor.wave)[[0, -1]])
    rng = np.random.default_rng(seed)
    runs = {}
    for role in ("validation", "calibration"):
        labels, spectra = stars(role)
        runs[role] = {"labels": labels}
        for level in (None, *levels):
            if level is None:
                batch, lab = spectra, labels
            else:
                batch = [add_noise(w, f, level, rng, window) for _ in range(draws) for w, f in spectra]
                lab = np.tile(labels, (draws, 1))
            # rv 0: the stars are at rest, and an RV estimate would resample (and smooth) the noise
            prep = predictor.prepare(batch, medium=predictor.instrument.medium, rv=0.0)
            bad = [e for e in prep.errors if e]
            if bad:
                raise RuntimeError(f"{role} S/N {level}: {bad[0]}")
            snr, _ = row_snr(prep.flux, prep.mask, prep.ivar)
            runs[role][level] = (predictor.member_logits(prep.flux, prep.mask), snr, lab)
            if progress:
                print(f"{role:11s} S/N {level or 'clean'}: measured S/N median {np.median(snr):.3g}")
    val = runs["validation"]
    slopes, factors, table = {}, {}, {}
    nodes = [float(np.median(val[lv][1])) for lv in (None, *levels)]
    for j, name in enumerate(LABEL_NAMES):
        k = {lv: fit_coverage_temperature([z[name] for z in val[lv][0]], val[lv][2][:, j], predictor.bins[name],
                                          grid=WIDEN_GRID, recentre=True) for lv in (None, *levels)}
        x = np.array([np.mean(np.clip(1 / val[lv][1] - 1 / NOISE_REFERENCE_SNR, 0, None)) for lv in levels])
        y = np.array([k[lv] / k[None] - 1.0 for lv in levels])
        slopes[name] = float(max(x @ y / (x @ x), 0.0)) if x @ x > 0 else 0.0
        factors[name] = {("clean" if lv is None else str(lv)): float(v) for lv, v in k.items()}
        # the table: factor relative to the clean fit at each measured S/N, never below 1 and never
        # smaller at a lower S/N (the fits at 49 stars are noisy; more noise never sharpens)
        rel = np.maximum.accumulate(np.maximum([k[lv] / k[None] for lv in (None, *levels)], 1.0))
        rel[0] = 1.0
        table[name] = [[round(n, 2), round(float(r), 3)] for n, r in zip(nodes, rel, strict=True)]
    report = {"model": predictor.path.name, "model_sha256": predictor.sha256, "levels": list(levels), "draws": draws,
              "seed": seed, "fit_on": "validation", "table": table, "factors": factors,
              "tried": {"form": "1 + c·max(0, 1/S/N - 1/50)", "slopes": slopes}, "roles": {}}
    for role, run in runs.items():
        base = _summary(run[None][0], run["labels"], predictor.bins)
        rows = []
        for lv in (None, *levels):
            zs, snr, lab = run[lv]
            tried = {n: 1.0 + slopes[n] * np.clip(1 / snr - 1 / NOISE_REFERENCE_SNR, 0, None) for n in LABEL_NAMES}
            before = _summary(zs, lab, predictor.bins)
            after = _summary(zs, lab, predictor.bins, noise_inflation(snr, table))
            linear = _summary(zs, lab, predictor.bins, tried)
            # what a temperature fitted to coverage at this very S/N (absolute, not relative to the clean
            # fit) would give: the most any widening by S/N alone can do, sharpening the clean rows included
            key = "clean" if lv is None else str(lv)
            refit = _summary(zs, lab, predictor.bins, {n: factors[n][key] for n in LABEL_NAMES})
            row = {"snr": "clean" if lv is None else lv, "measured_snr": float(np.median(snr))}
            for j, n in enumerate(LABEL_NAMES):
                ref = np.tile(base[n]["median"], len(lab) // len(run["labels"]))
                row[n] = {"coverage68": before[n]["coverage68"], "coverage68_widened": after[n]["coverage68"],
                          "coverage68_linear_form": linear[n]["coverage68"],
                          "coverage68_absolute_fit": refit[n]["coverage68"],
                          "width68": float(np.median(before[n]["width68"])),
                          "width68_widened": float(np.median(after[n]["width68"])),
                          "median_shift": float(np.median(before[n]["median"] - ref)),
                          "abs_shift": float(np.median(np.abs(before[n]["median"] - ref))),
                          "scatter": float(np.std(before[n]["median"] - lab[:, j]))}
            rows.append(row)
        report["roles"][role] = {"n": int(len(run["labels"])), "levels": rows}
    return report


def measure_curves(model=None, stars=None, seed: int = 0, progress: bool = True) -> dict:
    """Median shift of the predictions of the calibration stars against tilt, RV, S/N and LSF (module docstring)."""
    from remap_lib.prediction.inference import Predictor

    if stars is None:
        from remap_lib.evaluation.coverage import miles_stars as stars
    from remap_lib.spectra.preprocess import pixel_edges

    predictor = Predictor(model)
    window = tuple(float(x) for x in pixel_edges(predictor.wave)[[0, -1]])
    labels, spectra = stars("calibration")
    base, _ = _medians(predictor, spectra)
    report = {"model": predictor.path.name, "model_sha256": predictor.sha256, "n": len(spectra), "seed": seed,
              "statistic": "median over the stars of (prediction - prediction of the unaltered spectrum)"}

    def shift(changed):
        d = changed - base
        return {n: float(np.median(d[:, j])) for j, n in enumerate(LABEL_NAMES)} | {
            f"{n}_abs": float(np.median(np.abs(d[:, j]))) for j, n in enumerate(LABEL_NAMES)}

    report["tilt"] = []
    for shape in TILT_SHAPES:
        for a in TILT_AMPLITUDES:
            med, _ = _medians(predictor, [tilt(w, f, a, shape, window) for w, f in spectra])
            report["tilt"].append({"shape": shape, "amplitude": a, **shift(med)})
            if progress:
                print(f"tilt {shape} {a:+.2f}: {report['tilt'][-1]}")
    report["rv"] = []
    for v in (0.0, *RV_VALUES):
        moved = [doppler(w, f, v) for w, f in spectra]
        row = {"rv": v}
        if v:
            med, _ = _medians(predictor, moved)
            row |= shift(med)
        if predictor.detector is not None:  # predict's default: the RV estimated, applied beyond the tolerance
            fixed, table = _medians(predictor, moved, rv=None)
            est = np.asarray(table["rv"], dtype=np.float64)
            row |= {"estimated": int(np.isfinite(est).sum()), "estimate_median": float(np.nanmedian(est)),
                    "estimate_error_std": float(np.nanstd(est - v)),
                    "estimate_error_max": float(np.nanmax(np.abs(est - v))), "corrected": shift(fixed)}
        report["rv"].append(row)
        if progress:
            print(f"rv {v:+.0f}: {row}")
    report["snr"] = []
    rng = np.random.default_rng(seed)
    for level in NOISE_LEVELS:
        noisy = [add_noise(w, f, level, rng, window) for w, f in spectra]
        med, _ = _medians(predictor, noisy)
        row = {"snr": level, **shift(med)}
        if predictor.detector is not None:  # predict's default, RV estimated: how often noise fools it
            from remap_lib.prediction.preparation import RV_TOLERANCE

            med, table = _medians(predictor, noisy, rv=None)
            est = np.asarray(table["rv"], dtype=np.float64)
            row |= {"rv_applied": float(np.mean(np.abs(est) > RV_TOLERANCE)),
                    "rv_unknown": float(np.mean(np.isnan(est))), "with_rv_estimate": shift(med)}
        report["snr"].append(row)
    report["fwhm"] = []
    for fwhm in FWHM_VALUES:
        med, _ = _medians(predictor, [broaden(w, f, 2.5, fwhm) for w, f in spectra])
        report["fwhm"].append({"fwhm": fwhm, **shift(med)})
        if progress:
            print(f"fwhm {fwhm}: {report['fwhm'][-1]}")
    report["undeclared_resolution"] = undeclared_resolution(predictor, seed=seed, stars=stars)
    return report


def undeclared_resolution(predictor, n: int = 30, seed: int = 0, grid=None, stars=None) -> dict | None:
    """Finely sampled spectra without a declared resolution, against the same with it declared.

    ``sharp``: synthetic FGK dwarfs at the grid's own resolution (R = 11000, 0.11 Å pixels), where
    predict's assumption (an LSF :data:`remap_lib.prediction.preparation.ASSUMED_PIXELS_PER_FWHM` pixels wide) is
    about right, and reading them as the instrument's (the old default, no smoothing) is not.
    ``oversampled``: the calibration stars interpolated onto 0.1 Å pixels, their 2.5 Å LSF kept, where
    the assumption is wrong (they get smoothed once more). Each: the median and largest change of the
    medians, and the share flagged ``resolution_assumed``. ``sharp`` is None without the grid.
    """
    from remap_lib.data.sources.sme_grid import load_grid

    def compare(spectra, declared_kw, other_kw):
        declared, _ = _medians(predictor, spectra, **declared_kw)
        other, table = _medians(predictor, spectra, **other_kw)
        d = other - declared
        return {"flagged": float(np.mean(["resolution_assumed" in f for f in table["flags"]])),
                **{n: float(np.median(d[:, j])) for j, n in enumerate(LABEL_NAMES)},
                **{f"{n}_max_abs": float(np.max(np.abs(d[:, j]))) for j, n in enumerate(LABEL_NAMES)}}

    out = {"sharp": None}
    try:
        grid = load_grid() if grid is None else grid
    except (FileNotFoundError, OSError):
        grid = None
    if grid is not None:
        lab = grid.labels
        box = np.flatnonzero((lab[:, 0] >= FGK_TEFF[0]) & (lab[:, 0] <= FGK_TEFF[1]) & (lab[:, 1] >= GIANT_LOGG))
        rows = np.sort(np.random.default_rng(seed).choice(box, min(n, box.size), replace=False))
        spectra = [(grid.wave, grid.flux[r]) for r in rows]
        inst = predictor.instrument
        as_instrument = ({"resolution": inst.resolution} if inst.resolution else {"fwhm": inst.fwhm})
        out["sharp"] = {"n": int(rows.size), "resolution": float(grid.resolution),
                        "assumed": compare(spectra, {"resolution": grid.resolution}, {}),
                        "read_as_instrument": compare(spectra, {"resolution": grid.resolution}, as_instrument)}
    if stars is None:
        from remap_lib.evaluation.coverage import miles_stars as stars
    _, spectra = stars("calibration")
    fine = []
    for w, f in spectra:
        x = np.arange(w[0], w[-1], 0.1)
        fine.append((x, np.interp(x, w, f)))
    fwhm = float(predictor.instrument.fwhm or np.min(predictor.instrument.lsf_fwhm(predictor.wave)))
    out["oversampled"] = {"n": len(fine), "pixel": 0.1, "assumed": compare(fine, {"fwhm": fwhm}, {})}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.evaluation.robustness",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("noise", "curves"))
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--out", default=None, help="report (JSON; default results/noise_widening.json or "
                        "results/robustness.json)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "noise":
        report = measure_noise(args.model, seed=args.seed)
        out = args.out or RESULTS_DIR / "noise_widening.json"
        from remap_lib.prediction.widening import update_widening

        saved = update_widening(args.model, report["model_sha256"], "noise", report["table"],
                                f"python -m remap_lib.evaluation.robustness noise, report {Path(out).name}")
        print(f"wrote {saved}: what predict widens by for this model")
    else:
        report = measure_curves(args.model, seed=args.seed)
        out = args.out or RESULTS_DIR / "robustness.json"
    write_json(out, report)
    return report


if __name__ == "__main__":
    main()

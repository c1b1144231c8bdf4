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
import json
from pathlib import Path

import numpy as np

from remap_lib.constants import C_KMS, FGK_TEFF, GIANT_LOGG, LABEL_NAMES
from remap_lib.fileio import atomic_write
from remap_lib.paths import REPO_ROOT

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
            from remap_lib.prediction.inference import RV_TOLERANCE

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
    predict's assumption (an LSF :data:`remap_lib.prediction.inference.ASSUMED_PIXELS_PER_FWHM` pixels wide) is
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
        out = args.out or "results/noise_widening.json"
        from remap_lib.prediction.widening import update_widening

        saved = update_widening(args.model, report["model_sha256"], "noise", report["table"],
                                f"python -m remap_lib.evaluation.robustness noise, report {Path(out).name}")
        print(f"wrote {saved}: what predict widens by for this model")
    else:
        report = measure_curves(args.model, seed=args.seed)
        out = args.out or "results/robustness.json"
    with atomic_write(Path(out), "w") as fh:
        json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main()


# -- the book page ---------------------------------------------------------------------------------
RESULTS = REPO_ROOT / "results"
_UNITS = {"teff": ("T_eff", "K", 0), "logg": ("log g", "dex", 3), "feh": ("[Fe/H]", "dex", 3)}


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global

    return Figure(figsize=(9.0, 3.4), layout="constrained")


def plot_roc(ood: dict, ax) -> None:
    """The detector's ROC, calibration stars against each class that has one (``results/ood.json``)."""
    styles = ("-", "--", ":", "-.")
    for k, (name, entry) in enumerate((n, e) for n, e in ood["classes"].items() if "roc" in e):
        ax.plot(entry["roc"]["fpr"], entry["roc"]["tpr"], drawstyle="steps-post", ls=styles[k // 10 % 4],
                label=f"{name} (AUC {entry['auc']:.2f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("calibration stars flagged (false-positive rate)")
    ax.set_ylabel("class flagged (true-positive rate)")
    ax.legend(fontsize=6.5, loc="lower right")


def plot_noise_coverage(noise: dict, axes) -> None:
    """68 % coverage of the calibration stars against S/N, before and after the widening (``noise_widening.json``)."""
    levels = noise["roles"]["calibration"]["levels"]
    snr = [row["measured_snr"] for row in levels]
    for ax, name in zip(axes, LABEL_NAMES, strict=True):
        ax.plot(snr, [row[name]["coverage68"] for row in levels], "o-", label="calibrated only")
        ax.plot(snr, [row[name]["coverage68_widened"] for row in levels], "s-", label="widened for S/N")
        ax.axhspan(0.63, 0.73, color="0.9", zorder=0)
        ax.set_xscale("log")
        ax.set_xticks(snr, [f"{v:.0f}" for v in snr])
        ax.minorticks_off()
        ax.set_xlabel("S/N per pixel (measured)")
        ax.set_title(_UNITS[name][0], fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("68 % interval coverage")
    axes[0].legend(fontsize=7)


def plot_shifts(curves: dict, axes) -> None:
    """Median T_eff shift of the calibration stars against tilt, RV, S/N and LSF FWHM (``robustness.json``)."""
    for shape in TILT_SHAPES:
        rows = [r for r in curves["tilt"] if r["shape"] == shape]
        axes[0].plot([r["amplitude"] for r in rows], [r["teff"] for r in rows], "o-", label=shape)
    axes[0].set_xlabel("tilt amplitude")
    axes[0].legend(fontsize=7)
    rv = [r for r in curves["rv"] if "teff" in r]
    axes[1].plot([r["rv"] for r in rv], [r["teff"] for r in rv], "o-", label="taken at rest")
    if rv and "corrected" in rv[0]:
        axes[1].plot([r["rv"] for r in rv], [r["corrected"]["teff"] for r in rv], "s-", label="RV estimated")
    axes[1].set_xlabel("radial velocity (km/s)")
    axes[1].legend(fontsize=7)
    snr = [r["snr"] for r in curves["snr"]]
    axes[2].plot(snr, [r["teff"] for r in curves["snr"]], "o-")
    axes[2].set_xscale("log")
    axes[2].set_xticks(snr, [f"{v:g}" for v in snr])
    axes[2].minorticks_off()
    axes[2].set_xlabel("S/N per pixel")
    axes[3].plot([r["fwhm"] for r in curves["fwhm"]], [r["teff"] for r in curves["fwhm"]], "o-")
    axes[3].set_xlabel("undeclared LSF FWHM (Å)")
    axes[0].set_ylabel("median T_eff shift (K)")
    for ax in axes:
        ax.axhspan(-30, 30, color="0.9", zorder=0)


def book_page(out_dir, results_dir=RESULTS) -> str:
    """The book's robustness chapter, every number read from the committed reports in ``results_dir``."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    figdir = out_dir / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    lines = ["# Robustness: noise, unfamiliar spectra, calibration and RV", "",
             "What the shipped model does with spectra unlike its fine-tuning stars, measured on MILES and "
             "rendered from the reports in `results/` when the book is built. Each section names the command "
             "that writes its report.", ""]
    for name, render in (("ood.json", _ood_section), ("noise_widening.json", _noise_section),
                         ("conformal.json", _noisy_intervals_section), ("robustness.json", _curves_section)):
        path = results_dir / name
        if not path.exists():
            lines += [f"`results/{name}` is missing: run the command below and rebuild.", ""]
            continue
        lines += render(json.loads(path.read_text()), figdir)
    return "\n".join(lines)


def _noisy_intervals_section(conformal: dict, figdir: Path) -> list[str]:
    """What ``predict`` does with a noisy star's intervals when the model has factors fitted per S/N."""
    by_snr = conformal.get("fit", {}).get("factors", {}).get("by_snr")
    measured = (conformal.get("measured") or {}).get("roles", {}).get("calibration")
    if not by_snr or not measured:
        return []

    def row(where, e):
        return f"| {where} | " + " | ".join(f"{e['after'][level][n]:.2f}" for level in ("68", "95")
                                           for n in LABEL_NAMES) + " |"

    rows = [row("own", measured)] + [row(snr, e) for snr, e in measured["at_snr"].items()]
    n_stars = measured["n"]
    spread68, spread95 = ((p * (1 - p) / n_stars) ** 0.5 if n_stars else float("nan") for p in (0.68, 0.95))
    return ["### Intervals fitted per S/N", "",
            "The shipped model also has interval factors fitted at S/N " + ", ".join(f"{x:g}" for x in by_snr["snr"])
            + " on the study's cross-validated dwarfs and their noisier copies (`python -m "
            "remap_lib.evaluation.conformal`). They stand in for the widening above on the intervals: `predict` "
            "reads every row's intervals from the PMF widened for missing data only, and scales those of stars "
            f"called dwarfs at the row's S/N, holding the factors of {min(by_snr['snr']):g} below it. The "
            f"{n_stars} calibration stars' coverage through `predict`, as they are and degraded (one noise draw "
            f"per star; with {n_stars} stars a coverage of 0.68 is known to about ±{spread68:.2f}, one of 0.95 to "
            f"±{spread95:.2f}):", "",
            "| S/N | " + " | ".join(f"{level} % {_UNITS[n][0]}" for level in ("68", "95") for n in LABEL_NAMES) + " |",
            "|---|" + "---:|" * 6, *rows, "",
            "*Measured with `python -m remap_lib.evaluation.conformal` (report `results/conformal.json`).*",
            ""]


def _save(fig, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def _fig_md(file: str, caption: str, alt: str) -> list[str]:
    return ["```{figure} " + file, f":alt: {alt}", ":width: 100%", "", caption, "```", ""]


def _ood_section(ood: dict, figdir: Path) -> list[str]:
    fig = _figure()
    plot_roc(ood, fig.subplots(1, 1))
    _save(fig, figdir / "robustness_roc.png")
    cal = ood["classes"]["calibration"]
    unlabelled = ood.get("unlabelled") or []
    giants = (" Inputs the network calls giant are held against a second flux model, fitted on the "
              + " and ".join(unlabelled) + " with the labels the network gives them (their literature labels are "
              "never read), so those stars are in the domain and their row is a false-flag rate."
              if unlabelled else "")
    lines = ["## Out-of-domain detection", "",
             "`out_of_domain` asks whether a spectrum looks like a training star with the labels the network "
             "gives it (a quadratic label → flux model of the fine-tuning stars, χ² with the input's noise), and "
             "how far it is from the training spectra in the network's embedding." + giants + " Rule: "
             + ood["rule"] + ". Fitted on " + ", ".join(ood.get("fitted_on", ["finetune", "validation"]))
             + " only; the 30 calibration stars are never used to choose anything.", "",
             "| input | n | flagged | embedding threshold alone | `teff_outside_range` | AUC (against the "
             "calibration stars) |", "|---|---:|---:|---:|---:|---:|"]
    def share(e, key):  # a class with no spectra has no rates
        return "–" if e.get(key) is None else f"{e[key]:.0%}"

    for name, e in ood["classes"].items():
        auc = f"{e['auc']:.3f}" if "auc" in e else "–"
        lines.append(f"| {name} | {e['n']} | {share(e, 'flagged')} | {share(e, 'flagged_before')} | "
                     f"{share(e, 'teff_outside_range')} | {auc} |")
    out = ood.get("outside_box", {"n": 0, "flagged": float("nan")})
    lines += ["", f"Goal (issue 13): at least 95 % of the MILES stars outside the FGK box and of noise-only spectra "
              f"flagged, at most 5 % of in-domain FGK dwarfs. Here {cal['flagged']:.0%} of the calibration stars "
              f"are flagged, and {out['flagged']:.0%} of the {out['n']} MILES stars outside the box (hotter than "
              f"7000 K or cooler than 4000 K). Other synthetic library: {ood['other_library']}."]
    held = ood.get("in_domain")
    if held and "flagged_or_outside_range" in out:
        lo, hi = ood["teff_range"]
        lines += [f"A second flag, `teff_outside_range`, fires when more than {ood['outside_mass']:g} of the Teff "
                  f"PMF lies outside {lo:g}–{hi:g} K, the range the model was fine-tuned on. Counting either flag, "
                  f"{out['flagged_or_outside_range']:.0%} of the stars outside the box are caught (out_of_domain "
                  f"alone: {out['flagged']:.0%}), and {held['flagged_or_outside_range']:.0%} of the {held['n']} "
                  "in-domain stars not fine-tuned on (" + ", ".join(held["classes"]) + f"; out_of_domain alone: "
                  f"{held['flagged']:.0%}, which its threshold sets near 3 % on the stars it was chosen on; only the "
                  "calibration stars were never used for it)."]
        teffs = [t for n in held["classes"] for t in ood["classes"][n].get("teff_of_outside_range", [])]
        if teffs:
            near = np.mean([min(abs(t - lo), abs(t - hi)) <= 300 for t in teffs])
            lines[-1] += (f" Of the {len(teffs)} in-domain stars with `teff_outside_range`, {near:.0%} lie within "
                          "300 K of the range's edges by their literature Teff: an edge is sharp, literature "
                          "temperatures are not, so a star just inside it and one just outside look alike to any "
                          "detector. The flag says where the model extrapolates, not that its labels are wrong.")
    lines.append("")
    lines += _fig_md("figures/robustness_roc.png",
                     "ROC of the detector's score: each class against the 30 calibration dwarfs. A curve hugging "
                     "the top-left corner separates that class completely. The score alone hardly separates "
                     "noise-only spectra, whose χ² is consistent with their noise: the S/N rule flags them.",
                     "ROC curves of the out-of-domain score per class of input")
    lines += ["*Measured with `python -m remap_lib.prediction.ood` (report `results/ood.json`).*", ""]
    return lines


def _noise_section(noise: dict, figdir: Path) -> list[str]:
    fig = _figure()
    plot_noise_coverage(noise, fig.subplots(1, 3))
    _save(fig, figdir / "robustness_noise.png")
    lines = ["## Noise", "",
             "The S/N of each input (the lower of what its ivar claims and its pixel-to-pixel scatter) widens "
             "the PMFs by a temperature factor fitted, relative to the clean spectra, on the validation stars "
             "degraded to each S/N; the calibration stars are reported.", "",
             "| S/N asked | measured | " + " | ".join(f"{_UNITS[n][0]} coverage (widened)" for n in LABEL_NAMES)
             + " | median [Fe/H] shift |", "|---|---:|---:|---:|---:|---:|"]
    for row in noise["roles"]["calibration"]["levels"]:
        lines.append(f"| {row['snr']} | {row['measured_snr']:.1f} | " + " | ".join(
            f"{row[n]['coverage68']:.2f} ({row[n]['coverage68_widened']:.2f})" for n in LABEL_NAMES)
            + f" | {row['feh']['median_shift']:+.2f} |")
    from remap_lib.prediction.inference import LOW_SNR

    clean = noise["roles"]["calibration"]["levels"][0]
    over = [_UNITS[n][0] for n in LABEL_NAMES if clean[n]["coverage68"] > 0.73]
    lines += ["", "The goal is 0.68 ± 0.05 at every S/N. The widening is relative to the clean spectra's intervals "
              "and never sharpens them"
              + (f", so where those already cover more than 0.73 ({', '.join(over)}: first row) the noisy ones "
                 "do too" if over else "") + ". Noise also moves the medians, not only their spread (last column): "
              f"below S/N {LOW_SNR:g} rows are flagged `low_snr`."]
    levels = noise["roles"]["calibration"]["levels"]
    if "coverage68_absolute_fit" in levels[0]["teff"]:
        cov = [row[n]["coverage68_absolute_fit"] for row in levels for n in LABEL_NAMES]
        lines += ["Had the temperatures been refitted to coverage at each S/N on the validation stars (the clean "
                  f"ones sharpened too), the calibration stars' coverage would range from {min(cov):.2f} to "
                  f"{max(cov):.2f}: 30 stars and 49 to fit on leave that much spread."]
    lines.append("")
    lines += _fig_md("figures/robustness_noise.png",
                     "68 % interval coverage of the calibration stars against S/N, with the calibrated PMFs (circles) "
                     "and widened for the measured S/N (squares); the grey band is 0.68 ± 0.05.",
                     "Coverage against S/N per label")
    lines += ["*Measured with `python -m remap_lib.evaluation.robustness noise` "
              "(report `results/noise_widening.json`).*", ""]
    return lines


def _curves_section(curves: dict, figdir: Path) -> list[str]:
    fig = _figure()
    plot_shifts(curves, fig.subplots(1, 4))
    _save(fig, figdir / "robustness_shifts.png")
    worst = {n: max(abs(r[n]) for r in curves["tilt"]) for n in LABEL_NAMES}
    rv = [r for r in curves["rv"] if "estimate_error_max" in r]
    lines = ["## Flux calibration, radial velocity and resolution", "",
             f"Median change of the predictions of the {curves['n']} calibration stars ({curves['statistic']}).", "",
             "| alteration | " + " | ".join(f"{_UNITS[n][0]} ({_UNITS[n][1]})" for n in LABEL_NAMES) + " |",
             "|---|---:|---:|---:|",
             "| worst tilt, ±30 % across the window (goal 30 K / 0.05 / 0.03) | "
             + " | ".join(f"{worst[n]:.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |"]
    for r in curves["rv"]:
        if "teff" in r:
            lines.append(f"| RV {r['rv']:+.0f} km/s taken at rest | "
                         + " | ".join(f"{r[n]:+.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    for r in curves["fwhm"]:
        lines.append(f"| LSF {r['fwhm']:g} Å, undeclared | "
                     + " | ".join(f"{r[n]:+.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    u = curves.get("undeclared_resolution") or {}
    sharp, over = u.get("sharp"), u.get("oversampled")
    if sharp:
        for key, what in (("read_as_instrument", "read as the instrument's (no smoothing)"),
                          ("assumed", "predict's assumption from the sampling")):
            lines.append(f"| synthetic R = {sharp['resolution']:g} undeclared, {what}: largest of {sharp['n']} | "
                         + " | ".join(f"{sharp[key][n + '_max_abs']:.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    if over:
        lines.append(f"| MILES on {over['pixel']:g} Å pixels undeclared, predict's assumption: median | "
                     + " | ".join(f"{over['assumed'][n]:+.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    lines.append("")
    if rv:
        lines += [f"Without `rv`, predict estimates it by cross-correlation: over ±{max(abs(r['rv']) for r in rv):.0f} "
                  f"km/s the estimates are within {max(r['estimate_error_max'] for r in rv):.0f} km/s of the truth "
                  f"and the corrected medians within {max(abs(r['corrected']['teff']) for r in rv):.1f} K of the "
                  "rest-frame ones."]
    if sharp and over:
        from remap_lib.prediction.inference import ASSUMED_PIXELS_PER_FWHM

        lines += [f"Undeclared finely sampled spectra are flagged `resolution_assumed` "
                  f"({sharp['assumed']['flagged']:.0%} of the synthetic ones, {over['assumed']['flagged']:.0%} of "
                  f"the oversampled MILES ones) and taken to have an LSF {ASSUMED_PIXELS_PER_FWHM:g} pixels wide: "
                  "right for a spectrograph's own sampling, too sharp for an interpolated spectrum, which then gets "
                  "smoothed once more."]
    lines.append("")
    lines += _fig_md("figures/robustness_shifts.png",
                     "Median T_eff shift of the calibration stars against, left to right, a multiplicative tilt, a "
                     "radial velocity (taken at rest, and with predict's RV estimate), S/N, and an LSF broader than "
                     "the model's but not declared. The grey band is ±30 K, the tilt goal: compare how far each "
                     "alteration takes the medians from it.",
                     "Prediction shift against tilt, RV, S/N and resolution")
    lines += ["*Measured with `python -m remap_lib.evaluation.robustness curves` "
              "(report `results/robustness.json`).*", ""]
    return lines

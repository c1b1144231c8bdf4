"""How wide the synthetic grid's lines are against MILES's own, measured by χ² against the grid.

    python -m remap_lib.evaluation.linewidth [--profile default] [--out results/line_width.json]

Both training libraries reach the network at the instrument's nominal LSF (2.5 Å FWHM for MILES), but the
grid gets there through :func:`remap_lib.spectra.preprocess.degrade`, a Gaussian kernel of that FWHM and
then an average over each 0.9 Å pixel, while MILES's 2.5 Å is the width its authors measured on its
final pixels. If that width already holds the pixel, the grid's lines come out wider by the pixel's
share, about 3 % (:func:`pixel_share`); ``pixel_in_lsf`` in
:func:`remap_lib.spectra.preprocess.kernel_fwhm` degrades without it.

The measurement: every MILES FGK star of the fine-tuning and validation dwarfs and of the giant
candidates (the 30 calibration stars are left out, so nothing chosen from this is chosen on them) is
broadened by a fixed Gaussian of :data:`REFERENCE_FWHM` Å, which smooths its noise the same way in every
comparison, and fitted by χ² against every grid node broadened by each b of :data:`BROADENINGS`
(:class:`~remap_lib.evaluation.baselines.Chi2GridFit`, a free linear continuum). Gaussian widths add in
quadrature, so the b of least χ² (a parabola through the best three) gives the grid's width against
MILES's, W_grid² − W_MILES² = c² − b². The grid's width is known by construction (the nominal FWHM with
its pixel, or without it for a grid degraded with ``pixel_in_lsf``), MILES's is what is measured, so the
ratio is W_grid / sqrt(W_grid² − (c² − b²)). Per group: the median ratio over stars with a bootstrap
95 % interval; a star whose best b is at an end of the range counts at that end (censored, not
dropped). The method recovers a broadening put into the grid's own test nodes to within 0.3 %
(``tests/evaluation/test_linewidth.py`` checks it on a toy grid).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from tqdm.auto import tqdm

from remap_lib.constants import FGK_TEFF, FWHM_TO_SIGMA, GIANT_LOGG, MILES_FWHM, MILES_WAVE_STEP
from remap_lib.fileio import sha256_file, write_json
from remap_lib.paths import RESULTS_DIR, work_dir

REPORT = RESULTS_DIR / "line_width.json"
#: FWHM (Å) every observed spectrum is broadened by before the comparison: wide enough that the grid's
#: best broadening lies inside :data:`BROADENINGS` for lines up to ~15 % narrower or wider than MILES's.
REFERENCE_FWHM = 1.5
#: Gaussian FWHMs (Å) the grid is broadened by; 0.15 Å steps, refined by a parabola.
BROADENINGS = tuple(round(0.15 * k, 2) for k in range(17))
#: The MILES roles measured (the calibration stars are not).
GROUPS = {"dwarfs": ("finetune", "validation"), "giants": ("giant_candidate",)}


def pixel_share(fwhm: float = MILES_FWHM, pixel: float = MILES_WAVE_STEP) -> float:
    """W / fwhm − 1 for a Gaussian of ``fwhm`` averaged over pixels ``pixel`` wide (variance pixel²/12)."""
    return math.sqrt(1.0 + pixel**2 / 12.0 / FWHM_TO_SIGMA**2 / fwhm**2) - 1.0


def broaden(flux, fwhm: float, step: float, pad: int = 64) -> np.ndarray:
    """Rows of ``flux`` (linear pixels ``step`` Å) convolved with a Gaussian of ``fwhm`` Å; NaN stays NaN.

    In Fourier space, exact for the sub-pixel widths measured here, where a sampled Gaussian kernel
    (``scipy.ndimage.gaussian_filter1d``) keeps only a fraction of the variance it is asked for.
    Masked pixels count as continuum (1) while smoothing; the ends are reflected.
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    if fwhm == 0:
        return flux.copy()
    good = np.isfinite(flux)
    padded = np.pad(np.where(good, flux, 1.0), ((0, 0), (pad, pad)), mode="reflect")
    freq = np.fft.rfftfreq(padded.shape[-1], d=step)
    sigma = fwhm * FWHM_TO_SIGMA
    smooth = np.fft.irfft(np.fft.rfft(padded, axis=-1) * np.exp(-2.0 * (np.pi * sigma * freq) ** 2),
                          n=padded.shape[-1], axis=-1)[:, pad:pad + flux.shape[-1]]
    return np.where(good, smooth, np.nan)


def best_broadening(flux, ivar, grid_flux, grid_ivar, grid_labels, step: float,
                    reference: float = REFERENCE_FWHM, broadenings=BROADENINGS, progress: bool = True) -> np.ndarray:
    """Per observed spectrum, the Gaussian FWHM (Å) the grid must be broadened by to fit it best once the
    spectrum itself is broadened by ``reference``; where the best lies at an end of ``broadenings``, that end
    (the value is censored: :func:`measure` counts them)."""
    from remap_lib.evaluation.baselines import Chi2GridFit

    b = np.asarray(broadenings, dtype=np.float64)
    y = broaden(flux, reference, step)
    w = np.where(np.isfinite(y), ivar, 0.0)
    y = np.where(np.isfinite(y), y, 0.0)
    chi2 = np.stack([Chi2GridFit(continuum_degree=1, refine=False)
                     .fit(broaden(grid_flux, bk, step), grid_ivar, grid_labels)._chi2_nodes(y, w).min(axis=1)
                     for bk in tqdm(b, desc="grid broadenings", disable=not progress)], axis=1)
    k = np.argmin(chi2, axis=1)
    best = b[k].copy()
    for i, j in enumerate(k):
        if 0 < j < len(b) - 1:  # the vertex of the parabola through the best three
            c2, c1, _ = np.polyfit(b[j - 1:j + 2], chi2[i, j - 1:j + 2], 2)
            best[i] = -c1 / (2.0 * c2) if c2 > 0 else b[j]
    return best


def width_ratio(best, grid_fwhm: float, reference: float = REFERENCE_FWHM) -> np.ndarray:
    """W_grid / W_observed from the best grid broadening ``best`` (Å) and the grid's own line width
    ``grid_fwhm`` (Å), widths adding in quadrature: W_observed² = W_grid² − (reference² − best²)."""
    return grid_fwhm / np.sqrt(grid_fwhm**2 - (reference**2 - np.asarray(best) ** 2))


def grid_width(fwhm: float = MILES_FWHM, pixel: float = MILES_WAVE_STEP, pixel_in_lsf: bool = False) -> float:
    """The line width (FWHM, Å) of a grid degraded to ``fwhm`` on pixels ``pixel`` Å wide: the Gaussian,
    widened by the pixel average unless ``pixel_in_lsf`` took it off the kernel."""
    return fwhm if pixel_in_lsf else fwhm * (1.0 + pixel_share(fwhm, pixel))


def _median_interval(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(values, size=(n_boot, len(values))), axis=1)
    return [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def measure(profile: str = "default", progress: bool = True) -> dict:
    """The report: per group of MILES stars the grid's line width against theirs (see the module)."""
    from remap_lib.data.dataset import read_dataset
    from remap_lib.data.splits import read_splits

    work = work_dir(profile)
    synthetic_file, miles_file = work / "synthetic.h5", work / "miles.h5"
    grid, miles = read_dataset(synthetic_file), read_dataset(miles_file)
    step = float(np.median(np.diff(miles.wave)))
    roles = read_splits().set_index("id")["role"]
    role = np.array([roles.get(str(i), "") for i in miles.ids])
    teff, logg = miles.labels[:, 0], miles.labels[:, 1]
    fgk = (teff >= FGK_TEFF[0]) & (teff <= FGK_TEFF[1]) & np.isfinite(miles.labels).all(axis=1)
    report = {"profile": profile, "reference_fwhm": REFERENCE_FWHM, "broadenings": list(BROADENINGS),
              "instrument_fwhm": MILES_FWHM, "pixel": step, "pixel_share": pixel_share(MILES_FWHM, step),
              "data": {p.name: sha256_file(p) for p in (synthetic_file, miles_file)}, "groups": {}}
    for name, group_roles in GROUPS.items():
        sel = fgk & np.isin(role, group_roles) & ((logg < GIANT_LOGG) == (name == "giants"))
        best = best_broadening(miles.flux[sel], miles.ivar[sel], grid.flux, grid.ivar, grid.labels, step,
                               progress=progress)
        ratio = width_ratio(best, grid_width(MILES_FWHM, step))
        at_end = (best == BROADENINGS[0]) | (best == BROADENINGS[-1])
        report["groups"][name] = {
            "roles": list(group_roles), "n": int(sel.sum()), "n_at_range_end": int(at_end.sum()),
            "median_ratio": float(np.median(ratio)), "ci95": _median_interval(ratio),
            "quartiles": [float(q) for q in np.percentile(ratio, [25, 75])],
            "median_best_broadening": float(np.median(best))}
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.evaluation.linewidth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="whose training files (work/<profile>) to read")
    parser.add_argument("--out", default=str(REPORT), help="report (JSON)")
    args = parser.parse_args(argv)
    report = measure(args.profile)
    for name, g in report["groups"].items():
        print(f"{name} ({g['n']} stars): grid lines / MILES lines = {g['median_ratio']:.4f} "
              f"[{g['ci95'][0]:.4f}, {g['ci95'][1]:.4f}] (median, 95 %), quartiles {g['quartiles'][0]:.4f}–"
              f"{g['quartiles'][1]:.4f}; {g['n_at_range_end']} at the ends of the broadenings tried")
    print(f"the pixel's share of the width, if MILES's {MILES_FWHM:g} Å holds it: {report['pixel_share']:.4f}")
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()

"""The inputs the out-of-domain detector is measured on (:func:`remap_lib.prediction.ood.measure`).

MILES stars by role and by where they lie against the FGK box, and inputs made up to be unlike any
star: noise, featureless lines, the wrong resolution, heavy masking, the pretraining grid's held-out
dwarfs and the Kurucz test library nobody trained on.
"""

from __future__ import annotations

import numpy as np

from remap_lib.constants import FGK_TEFF, GIANT_LOGG

#: The classes of MILES stars outside the FGK box (Teff above 7000 K or below 4000 K), hottest first.
OUTSIDE_BOX = ("A/B (Teff > 10000 K)", "8500-10000 K", "7500-8500 K", "7000-7500 K", "M (Teff < 3700 K)", "3700-4000 K")
#: Those of them within 500 K of the box's edges, where a spectrum changes least across the edge.
EDGE_CLASSES = ("7000-7500 K", "3700-4000 K")
#: The class of the MILES FGK giant candidates: in the domain of a model that rehearses the synthetic
#: giants while fine-tuning, so they join the fit **without their labels** (:func:`remap_lib.prediction.ood.measure`).
GIANTS = f"FGK giants (log g < {GIANT_LOGG})"
#: The class name of the Kurucz test library (:mod:`remap_lib.data.kurucztest`) in the report.
OTHER_LIBRARY = "other library (Kurucz ATLAS9 test set)"


def measurement_classes(seed: int = 0) -> dict:
    """``{name: (kind, spectra, kwargs)}``: the MILES stars by role and box, and the made-up inputs."""
    from remap_lib.evaluation.coverage import miles_stars

    rng = np.random.default_rng(seed)
    out = {}
    labels_by_role = {}
    for role in ("finetune", "validation", "calibration", "giant_candidate", "other"):
        labels, spectra = miles_stars(role)
        labels_by_role[role] = (labels, spectra)
    out["finetune"] = labels_by_role["finetune"]
    out["validation"] = labels_by_role["validation"]
    out["calibration"] = labels_by_role["calibration"]
    out[GIANTS] = labels_by_role["giant_candidate"]
    lab, spec = labels_by_role["other"]
    teff = lab[:, 0]
    cuts = (teff > 10000, (teff > 8500) & (teff <= 10000), (teff > 7500) & (teff <= 8500),
            (teff > 7000) & (teff <= 7500), teff < 3700, (teff >= 3700) & (teff < 4000))
    for name, sel in zip(OUTSIDE_BOX, cuts, strict=True):
        idx = np.flatnonzero(sel)
        out[name] = (lab[idx], [spec[i] for i in idx])
    held_lab = np.concatenate([out["validation"][0], out["calibration"][0]])
    held = out["validation"][1] + out["calibration"][1]
    wave0 = held[0][0]
    noise = []
    for k in range(len(held)):  # noise only, S/N 1 about a positive level; half of them say so in their ivar
        f = 1.0 + rng.normal(0.0, 1.0, wave0.size)
        noise.append((wave0, f, np.ones(wave0.size)) if k % 2 else (wave0, f))
    out["noise only (S/N 1)"] = (np.full((len(noise), 3), np.nan), noise)
    feature = [(wave0, np.ones(wave0.size)), (wave0, 1.0 + rng.normal(0, 0.01, wave0.size))]
    feature += [(w, 10.0 - 2.5 * np.log10(f / np.median(f))) for w, f in held[::4]]  # magnitudes
    out["featureless (flat, magnitudes)"] = (np.full((len(feature), 3), np.nan), feature)
    from scipy.ndimage import gaussian_filter1d

    step = float(np.median(np.diff(wave0)))
    sigma_px = np.sqrt(5.0**2 - 2.5**2) / 2.3548 / step  # MILES's 2.5 Å FWHM broadened to 5 Å, undeclared
    out["wrong resolution (FWHM 5 Å, undeclared)"] = (held_lab, [(w, gaussian_filter1d(f, sigma_px)) for w, f in held])
    masked = []
    for w, f in held:  # 10 % of the window (the most predict accepts) masked in 8 runs
        g = np.array(f, dtype=np.float64)
        inwin = np.flatnonzero((w > 5000) & (w < 5700))
        run = int(0.1 * inwin.size / 8)
        for s in rng.choice(np.arange(inwin[0], inwin[-1] - run, run), 8, replace=False):
            g[s:s + run] = np.nan
        masked.append((w, g))
    out["heavy masking (10 %)"] = (held_lab, masked)
    synthetic = synthetic_dwarfs(seed)
    if synthetic is not None:
        out["synthetic FGK dwarfs (training grid's test nodes)"] = synthetic
    other = other_library()
    if other is not None:
        out[OTHER_LIBRARY] = other
    return out


def other_library():
    """The Kurucz ATLAS9 test library at its resolution, declared: a synthetic library nobody trained on.
    None where it is not built (outside a clone)."""
    from remap_lib.data.kurucztest import load_testset
    from remap_lib.fileio import RemapDataError

    try:
        lib = load_testset()
    except (FileNotFoundError, OSError, RemapDataError):
        return None
    return lib.labels, [(lib.wave, f) for f in lib.flux], {"resolution": float(lib.resolution)}


def synthetic_dwarfs(seed: int = 0, n: int = 60):
    """FGK dwarfs of the shipped synthetic grid's held-out ('test') nodes at its resolution, declared:
    spectra of the library the network was pretrained on but never fine-tuned on, the nearest thing to
    another library until one is built. None outside a clone (no grid)."""
    from remap_lib.data.sources.sme_grid import load_grid
    from remap_lib.training.trainsets import split_rows

    try:
        grid = load_grid()
    except (FileNotFoundError, OSError):
        return None
    lab = grid.labels
    test = split_rows(len(grid), 0.1, 0.1, 0) == "test"  # the split synthetic_set makes (seed 0)
    box = np.flatnonzero(test & (lab[:, 0] >= FGK_TEFF[0]) & (lab[:, 0] <= FGK_TEFF[1]) & (lab[:, 1] >= GIANT_LOGG))
    rows = np.sort(np.random.default_rng(seed).choice(box, min(n, box.size), replace=False))
    return lab[rows], [(grid.wave, grid.flux[r]) for r in rows], {"resolution": float(grid.resolution)}

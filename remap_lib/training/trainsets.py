"""Training sets: the synthetic grid and the MILES stars, on one instrument, treated alike.

Both go through :func:`remap_lib.spectra.preprocess.to_instrument` (degrade, resample, continuum-normalize)
and are stored with :func:`remap_lib.data.dataset.write_dataset`; notebook ``01_data_prep`` and
``remap prepare`` call :func:`prepare`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from remap_lib.constants import LABEL_SCALES
from remap_lib.data.dataset import SpectraSet, write_dataset
from remap_lib.data.sources.miles import MilesLibrary, load_miles
from remap_lib.data.sources.sme_grid import SyntheticGrid, load_grid
from remap_lib.paths import work_dir
from remap_lib.spectra import preprocess
from remap_lib.spectra.instruments import get_instrument


def split_rows(n: int, test_fraction: float, val_fraction: float, seed: int) -> np.ndarray:
    """'train'/'val'/'test' for each of ``n`` rows, drawn at random with ``seed``."""
    if not (test_fraction >= 0 and val_fraction >= 0 and test_fraction + val_fraction < 1):
        raise ValueError("test_fraction and val_fraction must be >= 0 with a sum below 1")
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    split = np.full(n, "train", dtype="<U5")
    split[order[:n_test]] = "test"
    split[order[n_test:n_test + n_val]] = "val"
    return split


def der_snr_noise(flux: np.ndarray) -> np.ndarray:
    """Per-spectrum noise σ estimated from the flux alone (DER_SNR, Stoehr et al. 2008).

    MILES ships no error spectra; this gives each star a single σ so that its inverse variance
    is not pretended to be infinite.
    """
    f = np.atleast_2d(flux)
    d = np.abs(2.0 * f[:, 2:-2] - f[:, :-4] - f[:, 4:])
    return 1.482602 / np.sqrt(6.0) * np.nanmedian(d, axis=1)


def synthetic_set(instrument="miles", grid: SyntheticGrid | str | Path | None = None, max_spectra: int | None = None,
                  test_fraction: float = 0.1, val_fraction: float = 0.1, seed: int = 0,
                  pixel_in_lsf: bool = False) -> SpectraSet:
    """The grid on ``instrument``'s pixels, with a train/val/test split by grid node.

    Held-out nodes ('test') are never trained on: the pretraining notebook measures accuracy on
    them. ``max_spectra`` draws a random subset (smoke runs). ``pixel_in_lsf``: degrade so that the
    lines, pixel included, have the instrument's FWHM (:func:`remap_lib.spectra.preprocess.kernel_fwhm`).
    """
    instrument = get_instrument(instrument)
    grid = grid if isinstance(grid, SyntheticGrid) else load_grid(grid)
    rows = np.arange(len(grid))
    if max_spectra is not None and max_spectra < len(grid):
        rows = np.sort(np.random.default_rng(seed).choice(len(grid), max_spectra, replace=False))
    spec = preprocess.to_instrument(grid.wave, grid.flux[rows], instrument, medium="air",
                                     source_resolution=grid.resolution, source="synthetic grid",
                                     pixel_in_lsf=pixel_in_lsf)
    ivar = np.where(spec.mask, 0.0, np.inf)  # noise-free: augmentation adds noise on the fly
    return SpectraSet(
        wave=spec.wave, flux=spec.flux, ivar=ivar, mask=spec.mask, labels=grid.labels[rows],
        ids=grid.model[rows], instrument=instrument, kind="synthetic",
        provenance={"source": grid.provenance.get("source", "PySME + MARCS + Gaia-ESO grid"), "grid": grid.provenance,
                    **({"pixel_in_lsf": True} if pixel_in_lsf else {})},
        meta={"split": split_rows(len(rows), test_fraction, val_fraction, seed), "alpha": grid.alpha[rows]},
    )


def miles_set(instrument="miles", library: MilesLibrary | None = None, max_stars: int | None = None,
              seed: int = 0) -> SpectraSet:
    """MILES stars on ``instrument``'s pixels (needs an instrument LSF no sharper than 2.5 Å)."""
    instrument = get_instrument(instrument)
    lib = library or load_miles(progress=False)
    rows = np.arange(len(lib.ids))
    if max_stars is not None and max_stars < len(rows):
        # keep every kind of star in a small subset: draw among those with all labels first
        labelled = rows[lib.has_all_labels]
        rows = np.sort(np.random.default_rng(seed).choice(labelled, min(max_stars, len(labelled)), replace=False))
    spec = preprocess.to_instrument(lib.wave, lib.flux[rows], instrument, medium=lib.instrument.medium,
                                    source_fwhm=lib.instrument.fwhm, source="MILES")
    sigma = der_snr_noise(np.where(spec.mask, np.nan, spec.flux))
    ivar = np.where(spec.mask, 0.0, 1.0 / np.maximum(sigma, 1e-4)[:, None] ** 2)
    labels = np.column_stack([lib.teff, lib.logg, lib.feh])[rows]
    return SpectraSet(
        wave=spec.wave, flux=spec.flux, ivar=ivar, mask=spec.mask, labels=labels,
        ids=np.array([f"m{i:04d}" for i in lib.ids[rows]]), instrument=instrument, kind="observed",
        provenance={"source": "MILES (Sanchez-Blazquez et al. 2006; Falcon-Barroso et al. 2011)",
                    "noise": "single sigma per star from DER_SNR"},
        meta={"name": lib.names[rows], "sptype": lib.sptype[rows], "refs": lib.refs[rows],
              "snr": 1.0 / np.maximum(sigma, 1e-4)},
    )


def nearest_by_labels(query: np.ndarray, candidates: np.ndarray, scales=LABEL_SCALES) -> np.ndarray:
    """Index of the candidate closest to each query in scaled (Teff, log g, [Fe/H]); NaN labels never win.

    Why not scikit-learn's ``NearestNeighbors``: it rejects NaN labels, which here are skipped per axis.
    """
    scales = np.asarray(scales, dtype=np.float64)
    q = np.atleast_2d(query)[:, None, :] / scales
    c = np.asarray(candidates)[None, :, :] / scales
    d = np.nansum((q - c) ** 2, axis=-1)
    d[:, ~np.all(np.isfinite(candidates), axis=1)] = np.inf
    return np.argmin(d, axis=1)


def prepared(profile: str = "default", out_dir=None, progress: bool = True) -> dict[str, Path]:
    """The profile's training files, as notebook 01 writes them; written first (about 10 s) if missing.

    Lets a reader start at any notebook after 01: files that notebook 01 already wrote, with
    whatever parameters it was given, are used as they are.
    """
    from remap_lib.training.profiles import resolve

    out = Path(out_dir) if out_dir else work_dir(profile)
    params = resolve("prepare", profile)
    wanted = ["synthetic"] + (["miles"] if _miles_fits(get_instrument(params["instrument"])) else [])
    paths = {kind: out / f"{kind}.h5" for kind in wanted}
    if all(p.is_file() for p in paths.values()):
        return paths
    if progress:
        print(f"{out}: training files missing; writing them as notebook 01 does ({profile} profile)")
    return prepare(profile, out_dir=out, seed=0, **params)


def _miles_fits(instrument) -> bool:
    # MILES (FWHM 2.5 Å) cannot be sharpened: only instruments at least that broad get a MILES set
    return float(np.min(instrument.lsf_fwhm(instrument.wavelength_grid()))) >= 2.5


def prepare(profile: str = "default", instrument="miles", max_grid_spectra=None, max_miles_stars=None,
            test_fraction: float = 0.1, val_fraction: float = 0.1, seed: int = 0,
            out_dir=None, grid_path=None, library: str = "sme") -> dict[str, Path]:
    """Write the training files the later notebooks read; returns their paths.

    ``synthetic.h5`` always, from the SME grid (``library="sme"``) or from PHOENIX nodes downloaded
    on the way (``"phoenix"``, :mod:`remap_lib.data.sources.phoenix_grid`; ``max_grid_spectra`` then
    limits what is downloaded); ``miles.h5`` when MILES can be put on ``instrument`` (its LSF must not
    be sharper than MILES's 2.5 Å: at the MARVELS profile only the synthetic set is written).
    """
    instrument = get_instrument(instrument)
    out = Path(out_dir) if out_dir else work_dir(profile)
    if library not in ("sme", "phoenix"):
        raise ValueError(f"library must be 'sme' or 'phoenix', got {library!r}")
    grid = grid_path
    if library == "phoenix":
        from remap_lib.data.sources.phoenix_grid import load_phoenix_grid

        grid = load_phoenix_grid(max_nodes=max_grid_spectra, seed=seed)
    paths = {"synthetic": write_dataset(out / "synthetic.h5", synthetic_set(
        instrument, grid, max_spectra=max_grid_spectra, test_fraction=test_fraction, val_fraction=val_fraction,
        seed=seed))}
    if _miles_fits(instrument):
        paths["miles"] = write_dataset(out / "miles.h5", miles_set(instrument, max_stars=max_miles_stars, seed=seed))
    return paths

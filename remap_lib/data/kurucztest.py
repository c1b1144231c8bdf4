"""A test library nobody trained on: PySME spectra over Kurucz ATLAS9 atmospheres, off the MARCS lattice.

    python -m remap_lib.data.kurucztest            # resumes where a killed run stopped
    python -m remap_lib.data.kurucztest --limit 5  # at most 5 more spectra this run

Same line list, wavelength range, synthesis settings, storage and code path as the shipped grid
(:func:`remap_lib.data.sources.sme_grid.build_grid`: one file per spectrum in a work folder, then one
HDF5 written atomically and its line in ``data/MANIFEST.sha256``); only the atmospheres differ.
Labels are drawn at random (seeded), FGK dwarfs and giants, none on a MARCS lattice value, and
each atmosphere is PySME's interpolation of the 8 solar-scaled ATLAS9 models around it
(:mod:`remap_lib.data.sources.kurucz`), so the stored labels are the exact truth. The line
synthesis uses the grid's microturbulence rule (1 km/s for log g ≥ 3.5, else 2 km/s).

The file's provenance says ``use: test only`` and :func:`remap_lib.data.sources.sme_grid.load_grid`
(the only way the training sets read a grid) refuses it; read it with :func:`load_testset`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from remap_lib.data.cache import MARCS_ARCHIVE
from remap_lib.data.sources.kurucz import KuruczStar, kurucz_star, solar_scaled_nodes
from remap_lib.data.sources.marcs import standard_vmicro
from remap_lib.data.sources.sme_grid import TEST_ONLY, SyntheticGrid, build_grid
from remap_lib.paths import DATA_DIR

TESTSET_FILE = DATA_DIR / "kurucz_testset_r11000.h5"
WORK_DIR = DATA_DIR / "kurucz_testset_work"
SEED = 13
N_STARS = 60
#: Label boxes drawn from (uniform): FGK dwarfs and red giants inside what ATLAS9 brackets.
BOXES = {
    "dwarf": {"teff": (4500.0, 6750.0), "logg": (3.8, 4.7), "monh": (-2.0, 0.4)},
    "giant": {"teff": (4000.0, 5400.0), "logg": (1.5, 3.3), "monh": (-2.0, 0.4)},
}
GIANT_FRACTION = 0.4
#: The MARCS grid's axis values (data/sme_marcs_ges_r11000.h5): no drawn label may sit on one.
MARCS_AXES = {
    "teff": (3800, 3900, 4000, 4250, 4500, 4750, 5000, 5250, 5500, 5750, 6000, 6250, 6500, 6750, 7000),
    "logg": tuple(np.round(np.arange(0.5, 5.01, 0.5), 2)),
    "monh": tuple(np.round(np.arange(-2.5, 0.51, 0.25), 2)),
}


def synthesis_vmicro(logg: float) -> float:
    """The grid's microturbulence for these labels (MARCS's standard: 1 km/s dwarfs, 2 km/s giants)."""
    return standard_vmicro(logg)


def draw_labels(n: int = N_STARS, seed: int = SEED, giant_fraction: float = GIANT_FRACTION,
                nodes=None) -> np.ndarray:
    """``(n, 3)`` Teff, log g, [M/H] (rounded to 1 K, 0.01, 0.01), giants first, all bracketed by ATLAS9.

    Draws that land on a MARCS axis value or outside the ATLAS9 grid are redrawn.
    """
    from remap_lib.data.sources.kurucz import corner_nodes

    nodes = solar_scaled_nodes() if nodes is None else nodes
    rng = np.random.default_rng(seed)
    n_giants = round(giant_fraction * n)
    out = []
    for kind, count in (("giant", n_giants), ("dwarf", n - n_giants)):
        box = BOXES[kind]
        while count:
            lab = np.array([rng.uniform(*box[k]) for k in ("teff", "logg", "monh")])
            lab = np.array([round(lab[0]), round(lab[1], 2), round(lab[2], 2)])
            if any(np.isclose(v, MARCS_AXES[k]).any() for v, k in zip(lab, ("teff", "logg", "monh"), strict=True)):
                continue
            try:
                corner_nodes(*lab, nodes)
            except ValueError:
                continue
            out.append(lab)
            count -= 1
    return np.array(out)


def test_stars(n: int = N_STARS, seed: int = SEED) -> list[KuruczStar]:
    nodes = solar_scaled_nodes()
    return [kurucz_star(float(t), float(g), float(m), synthesis_vmicro(g), nodes)
            for t, g, m in draw_labels(n, seed, nodes=nodes)]


def extra_provenance(n: int, seed: int) -> dict:
    return {
        "use": TEST_ONLY,
        "atmospheres": {"source": MARCS_ARCHIVE.requirement, "archive_sha256": MARCS_ARCHIVE.sha256,
                        "library": "Kurucz ATLAS9 ODFNEW (Castelli & Kurucz 2003), [alpha/Fe] = 0, xi = 2 km/s, "
                                   "plane-parallel, mixing length 1.25, no overshoot",
                        "interpolation": "PySME AtmosphereInterpolator on RHOX between the 8 bracketing models "
                                         "([M/H], then log g, then Teff)"},
        "abundances": "Asplund et al. (2009) solar, scaled by [M/H], in the line synthesis; the ATLAS9 structures "
                      "were computed with Grevesse & Sauval (1998) solar abundances",
        "labels": {"seed": seed, "n": n, "giant_fraction": GIANT_FRACTION, "boxes": BOXES,
                   "vmicro": "1 km/s for log g >= 3.5, else 2 km/s (the MARCS grid's rule)",
                   "off_lattice": "no label equals a MARCS grid axis value"},
        "command": "python -m remap_lib.data.kurucztest",
    }


def build(output=TESTSET_FILE, workdir=WORK_DIR, n: int = N_STARS, seed: int = SEED, limit: int | None = None,
          progress: bool = True) -> Path | None:
    """Synthesize the missing spectra (one process: PySME is single-threaded here), then assemble."""
    return build_grid(output, workdir, nodes=test_stars(n, seed), workers=1, limit=limit, progress=progress,
                      extra_provenance=extra_provenance(n, seed))


def load_testset(path=TESTSET_FILE) -> SyntheticGrid:
    """The Kurucz test library (the file ``load_grid`` refuses): flux at R = 11000, exact labels."""
    import json

    import h5py

    from remap_lib.fileio import RemapDataError
    from remap_lib.paths import repo_file

    path = Path(path)
    if path == TESTSET_FILE:
        repo_file(path, "the Kurucz test library")
    if not path.exists():
        raise RemapDataError(path, "Kurucz test library not found: run `python -m remap_lib.data.kurucztest`")
    try:
        with h5py.File(path, "r") as h5:
            grid = SyntheticGrid(wave=h5["wave"][:], flux=h5["flux"][:], labels=h5["labels"][:],
                                 alpha=h5["alpha"][:], vmicro=h5["vmicro"][:], model=h5["model"].asstr()[:],
                                 resolution=float(h5.attrs["resolution"]),
                                 provenance=json.loads(h5.attrs["provenance"]))
    except (OSError, KeyError, ValueError) as err:
        raise RemapDataError(path, f"not a readable test library ({err})") from err
    if grid.provenance.get("use") != TEST_ONLY:
        raise RemapDataError(path, "is not a test library (its provenance lacks use: test only)")
    return grid


def main(argv=None) -> Path | None:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.data.kurucztest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=TESTSET_FILE)
    parser.add_argument("--workdir", type=Path, default=WORK_DIR)
    parser.add_argument("-n", type=int, default=N_STARS, help="number of stars")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--limit", type=int, default=None, help="at most this many new spectra this run")
    args = parser.parse_args(argv)
    out = build(args.out, args.workdir, args.n, args.seed, args.limit)
    print(f"{out}: written" if out else f"{args.workdir}: spectra remain; rerun to continue")
    return out


if __name__ == "__main__":
    main()

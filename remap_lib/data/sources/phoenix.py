"""PHOENIX-ACES-AGSS-COND-2011 high-resolution spectra (Husser et al. 2013): the grid and its file names.

The grid lives on ``phoenix.astro.physik.uni-goettingen.de`` (override with ``$REMAP_PHOENIX_URL``
or ``base_url=``)::

    HiResFITS/WAVE_PHOENIX-ACES-AGSS-COND-2011.fits                       (1,569,128 px, vacuum Å)
    HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-0.0/lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits
    HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-0.0.Alpha=+0.20/
        lte05800-4.50-0.0.Alpha=+0.20.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits

Naming convention (PHOENIX's own): ``lte`` + Teff in 5 zero-padded digits, then log g with a sign
character that is *inverted* (historically PHOENIX wrote ``-log g``): ``-4.50`` means log g = +4.50,
so every node of this grid (log g 0…6) is written with ``-``; a ``+`` would mean a negative log g
(not in this grid, but parsed). Then [M/H] with an ordinary sign and one decimal, solar written
``-0.0``; then ``.Alpha=+0.20`` only when [α/M] ≠ 0. Folders are ``Z-0.0``, ``Z-1.0``, ``Z+0.5``,
``Z-0.0.Alpha=+0.20``.

Flux is erg/s/cm²/cm in the primary HDU with the labels in ``PHXTEFF``, ``PHXLOGG``, ``PHXM_H``,
``PHXALPHA``; the wavelength grid is a separate file shared by every spectrum.

Reading a file: :mod:`remap_lib.data.sources.phoenix_read`; downloading the grid into
``cache_dir()/phoenix/<the server's relative path>``: :mod:`remap_lib.data.sources.phoenix_fetch`;
putting a subset on the instrument as a training set: :mod:`remap_lib.data.sources.phoenix_grid`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from remap_lib.data.cache import cache_dir

__all__ = [
    "DEFAULT_BASE_URL", "GRID_ALPHA", "GRID_LOGG", "GRID_MONH", "GRID_TEFF", "HIRES_FLUX_BYTES", "HIRES_NPIX",
    "HIRES_RESOLUTION", "WAVE_RELPATH", "PhoenixNode", "node_text", "parse_phoenix_filename", "phoenix_base_url",
    "phoenix_cache_path", "phoenix_filename", "phoenix_folder", "phoenix_relpath", "phoenix_url", "validate_node",
]

DEFAULT_BASE_URL = "https://phoenix.astro.physik.uni-goettingen.de/data/"
GRID_NAME = "PHOENIX-ACES-AGSS-COND-2011"
HIRES_DIR = "HiResFITS"
WAVE_RELPATH = f"{HIRES_DIR}/WAVE_{GRID_NAME}.fits"
HIRES_NPIX = 1_569_128
FLUX_UNIT = "erg/s/cm^2/cm"
WAVE_UNIT = "Angstrom"
HEADER_KEYS = {"teff": "PHXTEFF", "logg": "PHXLOGG", "monh": "PHXM_H", "alpha": "PHXALPHA"}

# The grid of Husser et al. (2013, A&A 553, A6; book/references.bib: husser2013), checked against the
# paper's abstract (2300 K <= Teff <= 12000 K, 0.0 <= log g <= +6.0, -4.0 <= [Fe/H] <= +1.0,
# -0.2 <= [alpha/Fe] <= +1.2) and the steps of its Table 2 as the PHOENIX site lists them: Teff 100 K
# to 7000 K then 200 K, log g 0.5, [Fe/H] 1.0 below -2.0 then 0.5, [alpha/M] 0.2.
GRID_TEFF: tuple[int, ...] = tuple(range(2300, 7000, 100)) + tuple(range(7000, 12001, 200))
GRID_LOGG: tuple[float, ...] = tuple(0.5 * i for i in range(13))
GRID_MONH: tuple[float, ...] = (-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
GRID_ALPHA: tuple[float, ...] = tuple(round(-0.2 + 0.2 * i, 1) for i in range(8))
# [alpha/M] != 0 exists only for -3.0 <= [Fe/H] <= 0.0 (Table 2's note, as the PHOENIX site quotes it).
# The Teff limits are from memory, not confirmed by the sources checked; remap only uses [alpha/M] = 0.
ALPHA_TEFF_RANGE = (3500, 8000)
ALPHA_MONH_RANGE = (-3.0, 0.0)
#: Resolving power of the HiRes spectra in the optical (Husser et al. 2013, abstract: R = 500 000).
HIRES_RESOLUTION = 500_000.0
#: Bytes of one HiRes flux file's data: the whole file is downloaded (HIRES_NPIX float32 pixels,
#: BITPIX = -32), plus its FITS headers and the element-abundance table extension (a few kB).
HIRES_FLUX_BYTES = HIRES_NPIX * 4

_TOL = 1e-6
_FILE_RE = re.compile(
    r"^lte(?P<teff>\d{5})(?P<gsign>[-+])(?P<logg>\d\.\d{2})(?P<monh>[-+]\d\.\d)"
    r"(?:\.Alpha=(?P<alpha>[-+]\d\.\d{2}))?\." + re.escape(GRID_NAME) + r"-HiRes\.fits$"
)


class PhoenixNode(NamedTuple):
    """One grid point. Compares equal to a plain ``(teff, logg, monh, alpha)`` tuple."""

    teff: float
    logg: float
    monh: float
    alpha: float = 0.0


# --------------------------------------------------------------------------------------------
# Names and grid membership
# --------------------------------------------------------------------------------------------


def _nearest(values: Sequence[float], x: float, n: int = 2) -> list[float]:
    return sorted(sorted(values, key=lambda v: (abs(v - x), v))[:n])


def _on_grid(values: Sequence[float], x: float) -> bool:
    return any(abs(v - x) < _TOL for v in values)


def without_negative_zero(x: float) -> float:
    """Normalize -0.0 to 0.0 (and tiny float noise to exact zero)."""
    return 0.0 if abs(x) < _TOL else float(x)


def validate_node(teff, logg, monh, alpha=0.0) -> PhoenixNode:
    """Return the node as clean floats, or raise ValueError naming the nearest valid values."""
    try:
        teff, logg, monh, alpha = (float(v) for v in (teff, logg, monh, alpha))
    except (TypeError, ValueError) as err:
        raise ValueError(f"PHOENIX node values must be numbers, got {(teff, logg, monh, alpha)!r}") from err
    problems = []
    for name, value, grid, fmt in (
        ("Teff", teff, GRID_TEFF, "{:.0f}"),
        ("log g", logg, GRID_LOGG, "{:.2f}"),
        ("[M/H]", monh, GRID_MONH, "{:+.1f}"),
        ("[alpha/M]", alpha, GRID_ALPHA, "{:+.2f}"),
    ):
        if not np.isfinite(value) or not _on_grid(grid, value):
            near = ", ".join(fmt.format(v) for v in _nearest(grid, value if np.isfinite(value) else 0.0))
            problems.append(f"{name}={value:g} is not a PHOENIX grid value (nearest: {near})")
    if not problems and abs(alpha) > _TOL:
        lo_t, hi_t = ALPHA_TEFF_RANGE
        lo_m, hi_m = ALPHA_MONH_RANGE
        if not (lo_t - _TOL <= teff <= hi_t + _TOL and lo_m - _TOL <= monh <= hi_m + _TOL):
            problems.append(
                f"[alpha/M]={alpha:+.2f} models exist only for {lo_t} <= Teff <= {hi_t} K and "
                f"{lo_m:+.1f} <= [M/H] <= {hi_m:+.1f} (got Teff={teff:g}, [M/H]={monh:+.1f}); use alpha=0"
            )
    if problems:
        raise ValueError("; ".join(problems))
    return PhoenixNode(float(round(teff)), without_negative_zero(round(logg, 2)), without_negative_zero(round(monh, 1)),
                       without_negative_zero(round(alpha, 2)))


def _fmt_monh(monh: float) -> str:
    return "-0.0" if abs(monh) < _TOL else f"{monh:+.1f}"


def _fmt_alpha(alpha: float) -> str:
    return "" if abs(alpha) < _TOL else f".Alpha={alpha:+.2f}"


def phoenix_filename(teff, logg, monh, alpha=0.0, *, validate: bool = True) -> str:
    """``lte05800-4.50-0.0[.Alpha=+0.20].PHOENIX-ACES-AGSS-COND-2011-HiRes.fits``."""
    if validate:
        teff, logg, monh, alpha = validate_node(teff, logg, monh, alpha)
    teff, logg, monh, alpha = float(teff), float(logg), float(monh), float(alpha)
    gsign = "+" if logg < -_TOL else "-"  # PHOENIX writes -log g: "-4.50" is log g = +4.50
    return (f"lte{int(round(teff)):05d}{gsign}{abs(logg):.2f}{_fmt_monh(monh)}{_fmt_alpha(alpha)}"
            f".{GRID_NAME}-HiRes.fits")


def phoenix_folder(monh, alpha=0.0) -> str:
    """``Z-0.0``, ``Z+0.5``, ``Z-0.0.Alpha=+0.20``."""
    return f"Z{_fmt_monh(float(monh))}{_fmt_alpha(float(alpha))}"


def phoenix_relpath(teff, logg, monh, alpha=0.0, *, validate: bool = True) -> str:
    """Server-relative path: ``HiResFITS/PHOENIX-ACES-AGSS-COND-2011/<folder>/<file>``."""
    name = phoenix_filename(teff, logg, monh, alpha, validate=validate)
    return f"{HIRES_DIR}/{GRID_NAME}/{phoenix_folder(monh, alpha)}/{name}"


def parse_phoenix_filename(name) -> PhoenixNode:
    """Inverse of :func:`phoenix_filename` (a leading folder path is ignored).

    Only canonical names are accepted, so ``phoenix_filename(*parse_phoenix_filename(n)) == n``.
    Grid membership is *not* checked here (use :func:`validate_node`).
    """
    base = Path(str(name)).name
    m = _FILE_RE.match(base)
    if not m:
        raise ValueError(f"{base!r} is not a PHOENIX HiRes file name "
                         f"(expected like 'lte05800-4.50-0.0.{GRID_NAME}-HiRes.fits')")
    logg = float(m["logg"]) * (-1.0 if m["gsign"] == "+" else 1.0)
    node = PhoenixNode(float(int(m["teff"])), without_negative_zero(logg), without_negative_zero(float(m["monh"])),
                       without_negative_zero(float(m["alpha"])) if m["alpha"] else 0.0)
    if phoenix_filename(*node, validate=False) != base:
        raise ValueError(f"{base!r} is not a canonical PHOENIX file name "
                         f"(canonical: {phoenix_filename(*node, validate=False)!r})")
    return node


def phoenix_base_url(base_url: str | None = None) -> str:
    """``base_url``, else ``$REMAP_PHOENIX_URL``, else the Göttingen server; always ends in '/'."""
    url = base_url or os.environ.get("REMAP_PHOENIX_URL") or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def phoenix_url(relpath: str, base_url: str | None = None) -> str:
    return phoenix_base_url(base_url) + urllib.parse.quote(relpath, safe="/=+-.")


def phoenix_cache_path(relpath: str, cache=None) -> Path:
    """Where a server file lives in the cache: ``<cache>/phoenix/<relpath>``."""
    root = Path(cache) if cache is not None else cache_dir()
    return root / "phoenix" / relpath


def node_text(n: PhoenixNode) -> str:
    """A node as text for messages: "Teff=5800, log g=4.5, [M/H]=+0, [alpha/M]=+0"."""
    return f"Teff={n.teff:g}, log g={n.logg:g}, [M/H]={n.monh:+g}, [alpha/M]={n.alpha:+g}"

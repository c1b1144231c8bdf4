"""MILES observed stellar library: fetch, parse the labels, load the spectra.

MILES (Sánchez-Blázquez et al. 2006; Falcón-Barroso et al. 2011) travels inside the
``sdss-mangadap==4.5.0`` wheel on PyPI (folder ``mangadap/data/spectral_templates/miles/``,
see :data:`remap_lib.data.cache.MILES_ARCHIVE`). That folder holds

* 984 spectra ``MILES_res2.50_star_mNNNNV.fits`` (one 1-D primary HDU of 4300 pixels, linear
  air-wavelength grid from CRVAL1/CDELT1/CRPIX1 = 3540.5 Å / 0.9 Å / 1, FWHM 2.5 Å, flux
  normalised to order unity); spectrum m0970 was moved to ``omit/`` by the DAP authors
  (shortened wavelength range, red-end artefact) and is *not* loaded;
* ``paramsMILES_v9.1.txt``: the MILES catalogue, fixed width (Name, MILES id, CaT id, SpT,
  Teff, log g, [Fe/H], Refs, Libraries), 985 rows, ``--`` for a missing value;
* ``MILES_params.db``: the DAP's pared-down copy (id, Teff, log g, [Fe/H]) with 99999 (Teff)
  and 9999 (log g, [Fe/H]) for missing values.

Both label files carry the same typo: star HD044691A has MILES id ``022.`` (id 0022 is
HD003567 and id 0221 is otherwise absent; the m0221 spectrum is an A star, matching
HD044691A's 7950 K, while m0022 is the F5V star). We repair it through the explicit
:data:`ID_ERRATA` table and record the repair in :attr:`MilesLibrary.label_notes`.

The label files are read by :mod:`remap_lib.data.sources.miles_labels`. Label precedence: the two
files are merged by MILES id; values come from
``paramsMILES_v9.1.txt`` (the original catalogue), and every disagreement with
``MILES_params.db`` (a value, or an id present in only one file) is warned about with
:class:`MilesLabelWarning` and kept in :attr:`MilesLabelTable.notes` – never silently dropped.

Counts (measured): the catalogue has 985 stars, 946 with all three labels, and with
4000 < Teff < 7000 K 354 dwarfs (log g >= 3.5) and 369 giants. :func:`load_miles` loads the 984
spectra shipped (no m0970, a 5170 K / log g 2.41 giant), so 945 have all labels; the masks
include the Teff range ends by default (355 dwarfs, 371 giants) and give 354 / 368 with
``inclusive=False``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from tqdm import tqdm

from remap_lib.constants import FGK_TEFF, GIANT_LOGG, MILES_FWHM, MILES_NPIX, MILES_WAVE_START, MILES_WAVE_STEP
from remap_lib.data.cache import MILES_ARCHIVE, extract_archive
from remap_lib.data.sources.miles_labels import MilesLabelWarning, read_miles_labels
from remap_lib.fileio import RemapDataError, require_nonempty
from remap_lib.spectra.instruments import Instrument

__all__ = ["MILES_NPIX", "MilesLibrary", "fetch_miles", "load_miles", "read_miles_spectrum", "spectrum_path"]

SPECTRUM_GLOB = "MILES_res2.50_star_m*V.fits"
_SPECTRUM_RE = re.compile(r"^MILES_res2\.50_star_m(\d{4})V\.fits$")

# --------------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------------

def fetch_miles(cache=None) -> Path:
    """Folder holding the MILES files, downloading (pip) and extracting the wheel if needed."""
    return extract_archive(MILES_ARCHIVE, Path(cache) if cache is not None else None)


def spectrum_path(folder, miles_id: int) -> Path:
    """Path of the spectrum of MILES star ``miles_id`` inside ``folder``."""
    return Path(folder) / f"MILES_res2.50_star_m{int(miles_id):04d}V.fits"


# --------------------------------------------------------------------------------------------
# spectra
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Grid:
    crval: float
    cdelt: float
    crpix: float
    npix: int
    fwhm: float

    def wave(self) -> np.ndarray:
        return self.crval + (np.arange(self.npix, dtype=np.float64) + 1.0 - self.crpix) * self.cdelt

    def matches(self, other: _Grid) -> bool:
        return (self.npix == other.npix and np.isclose(self.crval, other.crval, rtol=0, atol=1e-6)
                and np.isclose(self.cdelt, other.cdelt, rtol=1e-10, atol=0)
                and np.isclose(self.crpix, other.crpix, rtol=0, atol=1e-9)
                and (np.isnan(self.fwhm) and np.isnan(other.fwhm) or np.isclose(self.fwhm, other.fwhm)))

    def describe(self) -> str:
        return (f"CRVAL1={self.crval} CDELT1={self.cdelt} CRPIX1={self.crpix} NAXIS1={self.npix} "
                f"FWHM={self.fwhm}")


def _read_fits(path, npix: int | None = MILES_NPIX) -> tuple[_Grid, np.ndarray]:
    path = require_nonempty(path)
    try:
        with warnings.catch_warnings():
            # astropy warns, then fails or pads; we check the length ourselves and say so
            warnings.filterwarnings("ignore", message="File may have been truncated")
            hdul = fits.open(path, memmap=False)
        with hdul:
            hdu = hdul[0]
            header = hdu.header
            naxis = int(header.get("NAXIS", 0))
            if naxis == 0 or hdu.header.get("NAXIS1") is None:
                raise RemapDataError(path, "primary HDU holds no data array")
            if naxis != 1:
                raise RemapDataError(path, f"expected a 1-D spectrum, primary HDU has NAXIS={naxis}")
            length = int(header["NAXIS1"])
            info = hdu.fileinfo()
            need = info["datLoc"] + length * abs(int(header["BITPIX"])) // 8
            size = path.stat().st_size
            if size < need:
                raise RemapDataError(path, f"truncated FITS: header promises {length} pixels "
                                     f"({need} bytes) but the file has {size} bytes")
            data = hdu.data
            missing = [k for k in ("CRVAL1", "CDELT1") if k not in header]
            if missing:
                raise RemapDataError(path, f"no wavelength solution: header lacks {', '.join(missing)}")
            grid = _Grid(float(header["CRVAL1"]), float(header["CDELT1"]), float(header.get("CRPIX1", 1.0)),
                         length, float(header.get("FWHM", np.nan)))
    except RemapDataError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as err:
        raise RemapDataError(path, f"unreadable FITS file ({type(err).__name__}: {err})") from err
    if data is None or data.ndim != 1 or data.shape[0] != length:
        raise RemapDataError(path, f"data shape {None if data is None else data.shape} does not match "
                             f"NAXIS1={length}")
    if npix is not None and length != npix:
        raise RemapDataError(path, f"spectrum has {length} pixels, expected {npix} for MILES")
    flux = np.asarray(data, dtype=np.float64)
    bad = ~np.isfinite(flux)
    if bad.any():
        raise RemapDataError(path, f"{int(bad.sum())} non-finite flux value(s)")
    if grid.cdelt <= 0:
        raise RemapDataError(path, f"non-increasing wavelength grid (CDELT1={grid.cdelt})")
    return grid, flux


def read_miles_spectrum(path, npix: int | None = MILES_NPIX) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength in air Å from the header WCS, flux) of one MILES FITS spectrum.

    Raises :class:`RemapDataError` naming ``path`` for a missing, empty, truncated or
    unreadable file, a missing wavelength solution, non-finite flux, or a length other than
    ``npix`` (pass ``None`` to accept any length).
    """
    grid, flux = _read_fits(path, npix)
    return grid.wave(), flux


# --------------------------------------------------------------------------------------------
# the library
# --------------------------------------------------------------------------------------------

def native_instrument(fwhm: float = MILES_FWHM, wave_start: float = MILES_WAVE_START,
                      wave_step: float = MILES_WAVE_STEP, n_pix: int = MILES_NPIX) -> Instrument:
    """The MILES library as observed: the whole linear air-wavelength grid, Gaussian LSF of ``fwhm`` Å.

    :data:`remap_lib.spectra.instruments.MILES` is the model's 5000–5700 Å window of this same grid.
    """
    return Instrument("MILES", wave_start, wave_start + (n_pix - 1) * wave_step, medium="air", fwhm=fwhm,
                      pixel=wave_step, pixel_origin=wave_start)


@dataclass
class MilesLibrary:
    """MILES spectra on one common grid plus their literature labels (NaN where missing)."""

    wave: np.ndarray  # (n_pix,) float64, air Å
    flux: np.ndarray  # (n, n_pix) float32, as distributed (normalised to order unity)
    ids: np.ndarray  # (n,) int MILES ids
    names: np.ndarray  # (n,) str
    teff: np.ndarray  # (n,) float K
    logg: np.ndarray  # (n,) float dex (cgs)
    feh: np.ndarray  # (n,) float dex
    sptype: np.ndarray  # (n,) str, '' if none
    refs: np.ndarray  # (n,) str, MILES reference codes for the labels, '' if none
    cluster: np.ndarray = None  # (n,) bool, cluster member ('Cl' flag)
    libraries: np.ndarray = None  # (n,) str, library flag letters from the catalogue
    instrument: Instrument = field(default_factory=lambda: native_instrument())
    source: str = ""  # folder the files were read from
    label_notes: tuple[str, ...] = ()  # repaired ids and label-file disagreements

    def __post_init__(self):
        n = len(self.ids)
        if self.cluster is None:
            self.cluster = np.zeros(n, dtype=bool)
        if self.libraries is None:
            self.libraries = np.full(n, "", dtype=object)
        for name in ("flux", "names", "teff", "logg", "feh", "sptype", "refs", "cluster", "libraries"):
            if len(getattr(self, name)) != n:
                raise RemapDataError(f"MilesLibrary.{name}", f"has {len(getattr(self, name))} rows, "
                                     f"expected {n}")
        if self.flux.ndim != 2 or self.flux.shape[1] != self.wave.shape[0]:
            raise RemapDataError("MilesLibrary.flux", f"shape {self.flux.shape} does not match wave "
                                 f"{self.wave.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_all_labels(self) -> np.ndarray:
        """Stars with finite Teff, log g and [Fe/H]."""
        return np.isfinite(self.teff) & np.isfinite(self.logg) & np.isfinite(self.feh)

    def _teff_in(self, teff_range, inclusive: bool) -> np.ndarray:
        lo, hi = teff_range
        with np.errstate(invalid="ignore"):
            if inclusive:
                return (self.teff >= lo) & (self.teff <= hi)
            return (self.teff > lo) & (self.teff < hi)

    def fgk_dwarfs(self, teff_range=FGK_TEFF, logg_min: float = GIANT_LOGG,
                   inclusive: bool = True) -> np.ndarray:
        """Mask: all three labels, Teff within ``teff_range`` and log g >= ``logg_min``.

        ``inclusive`` says whether Teff equal to a range end counts (default yes).
        """
        with np.errstate(invalid="ignore"):
            return self.has_all_labels & self._teff_in(teff_range, inclusive) & (self.logg >= logg_min)

    def fgk_giants(self, teff_range=FGK_TEFF, logg_max: float = GIANT_LOGG,
                   inclusive: bool = True) -> np.ndarray:
        """Mask: all three labels, Teff within ``teff_range`` and log g < ``logg_max``."""
        with np.errstate(invalid="ignore"):
            return self.has_all_labels & self._teff_in(teff_range, inclusive) & (self.logg < logg_max)

    def index_of(self, miles_id: int) -> int:
        """Row of MILES star ``miles_id``."""
        hits = np.flatnonzero(self.ids == int(miles_id))
        if hits.size == 0:
            raise KeyError(f"MILES id {int(miles_id):04d} not loaded")
        return int(hits[0])

    def select(self, mask_or_index) -> MilesLibrary:
        """A new library holding only the rows picked by a boolean mask or an index array."""
        sel = np.asarray(mask_or_index)
        pick = lambda a: a[sel]
        return MilesLibrary(
            wave=self.wave, flux=pick(self.flux), ids=pick(self.ids), names=pick(self.names),
            teff=pick(self.teff), logg=pick(self.logg), feh=pick(self.feh), sptype=pick(self.sptype),
            refs=pick(self.refs), cluster=pick(self.cluster), libraries=pick(self.libraries),
            instrument=self.instrument, source=self.source, label_notes=self.label_notes)

    def to_table(self, include_flux: bool = False):
        """astropy Table, one row per star (flux as a (n_pix,) column if ``include_flux``)."""
        from astropy.table import Table

        table = Table()
        table["id"] = self.ids
        table["name"] = self.names.astype(str)
        table["cluster"] = self.cluster
        table["sptype"] = self.sptype.astype(str)
        table["teff"] = self.teff
        table["teff"].unit = "K"
        table["logg"] = self.logg
        table["feh"] = self.feh
        table["refs"] = self.refs.astype(str)
        table["libraries"] = self.libraries.astype(str)
        table["has_all_labels"] = self.has_all_labels
        if include_flux:
            table["flux"] = self.flux
        inst = self.instrument
        table.meta.update({"library": inst.name, "medium": inst.medium, "fwhm_angstrom": inst.fwhm,
                           "wave_start": inst.wave_min, "wave_step": inst.pixel,
                           "n_pix": inst.npix, "source": self.source})
        return table


def _found_ids(folder: Path) -> list[int]:
    ids = []
    for p in folder.glob(SPECTRUM_GLOB):
        m = _SPECTRUM_RE.match(p.name)
        if m:
            ids.append(int(m.group(1)))
    return sorted(ids)


def load_miles(cache=None, path=None, ids=None, progress: bool = True) -> MilesLibrary:
    """Load MILES spectra and labels.

    Parameters
    ----------
    cache : cache root for :func:`fetch_miles` (default ``$REMAP_CACHE`` or ``~/.cache/remap``).
    path : a folder with the MILES files; given, nothing is fetched.
    ids : MILES ids to load, in this order (default: every spectrum in the folder, by id).
    progress : show a tqdm bar.

    Every spectrum must share one wavelength grid (read from CRVAL1/CDELT1/CRPIX1/NAXIS1)
    and FWHM; the first file sets it. Spectra without a label row get NaN labels and a
    :class:`MilesLabelWarning`.
    """
    folder = Path(path) if path is not None else fetch_miles(cache)
    if not folder.is_dir():
        raise RemapDataError(folder, "MILES folder does not exist")
    labels = read_miles_labels(folder)
    if ids is None:
        wanted = _found_ids(folder)
        if not wanted:
            raise RemapDataError(folder, f"no MILES spectra ({SPECTRUM_GLOB}) in folder")
    else:
        wanted = [int(i) for i in np.atleast_1d(ids)]
        if len(set(wanted)) != len(wanted):
            raise ValueError("ids contains duplicates")
        if not wanted:
            raise ValueError("ids is empty")
    for i in wanted:
        p = spectrum_path(folder, i)
        if not p.exists():
            why = (" (the MaNGA DAP moved it to omit/: shortened wavelength range, red-end artefact)"
                   if (folder / "omit" / p.name).exists() else "")
            raise RemapDataError(p, f"no spectrum for MILES id {i:04d}{why}")

    flux = np.empty((len(wanted), 0), dtype=np.float32)
    grid0 = first = None
    for row, i in enumerate(tqdm(wanted, desc="MILES spectra", unit="spec", disable=not progress)):
        p = spectrum_path(folder, i)
        grid, spec = _read_fits(p)
        if grid0 is None:
            grid0, first = grid, p
            flux = np.empty((len(wanted), grid.npix), dtype=np.float32)
        elif not grid.matches(grid0):
            raise RemapDataError(p, f"wavelength grid {grid.describe()} differs from {first.name} "
                                 f"({grid0.describe()})")
        flux[row] = spec

    table = labels.table.set_index("id")
    unlabelled = [i for i in wanted if i not in table.index]
    if unlabelled:
        warnings.warn(f"{folder}: {len(unlabelled)} spectra have no label row: "
                      + ", ".join(f"{i:04d}" for i in unlabelled), MilesLabelWarning, stacklevel=2)
    rows = table.reindex(wanted)
    text = lambda col: rows[col].fillna("").astype(str).to_numpy(dtype=object)
    fwhm = grid0.fwhm if np.isfinite(grid0.fwhm) else MILES_FWHM
    instrument = native_instrument(fwhm=float(fwhm), wave_start=float(grid0.wave()[0]), wave_step=grid0.cdelt,
                                   n_pix=grid0.npix)
    return MilesLibrary(
        wave=grid0.wave(), flux=flux, ids=np.asarray(wanted, dtype=int), names=text("name"),
        teff=rows["teff"].to_numpy(dtype=float), logg=rows["logg"].to_numpy(dtype=float),
        feh=rows["feh"].to_numpy(dtype=float), sptype=text("sptype"), refs=text("refs"),
        cluster=rows["cluster"].eq(True).to_numpy(dtype=bool), libraries=text("libraries"),
        instrument=instrument, source=str(folder), label_notes=labels.notes)

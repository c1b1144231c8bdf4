"""Readers for users' spectra: FITS images with a wavelength WCS, FITS/ECSV/CSV tables, plain text, our HDF5 store.

Every reader returns :class:`RawSpectrum` objects with wavelengths in Å and the medium (air or
vacuum) the file declares, or ``None`` when it declares none. Units are converted where a file
states them (``CUNIT1``, ``TUNITn``, ECSV units). A file that cannot be read raises
:class:`~remap_lib.fileio.RemapDataError` naming the file and the problem; spectra inside a
readable file are not judged here (the predictor checks each one and reports per row).

Supported layouts
-----------------
* **FITS image**, 1-D (one spectrum) or 2-D (one spectrum per row, shared axis), wavelengths from
  ``CRVAL1``/``CDELT1`` (or ``CD1_1``)/``CRPIX1``: linear, log10-linear (IRAF ``DC-FLAG = 1``) or
  ``CTYPE1 = 'WAVE-LOG'`` (FITS WCS paper III). Optional image extensions ``IVAR``, ``ERROR``/``ERR``/
  ``SIGMA`` and ``MASK`` of the same shape.
* **FITS binary table** (first table HDU with a flux column): either one spectrum with one row per
  pixel (SDSS ``spec-*.fits`` coadd: ``loglam``, ``flux``, ``ivar``, ``and_mask``), or one spectrum
  per row with array columns.
* **ECSV / CSV** table: one spectrum, columns as for FITS tables. A CSV file whose first row is
  numbers has no header: its columns are wavelength (Å), flux and optionally error, by position.
* **plain text** (``.txt``, ``.dat``, ``.asc``): whitespace-separated columns, wavelength (Å), flux
  and optionally error, with or without a header line naming them (``#`` starts a comment; a last
  comment line just before the numbers may name the columns too).
* **HDF5** in the project's own store layout (:mod:`remap_lib.data.dataset`): spectra already on an
  instrument grid and continuum-normalized.
* a **directory** (every supported file in it, not recursive) or a **glob** pattern: hidden files
  are ignored, and files of another type are reported, never silently dropped
  (:mod:`remap_lib.spectra.inputfiles`).

Medium: ``CTYPE1 = 'AWAV'`` means air and ``'WAVE'`` vacuum (FITS standard); keywords ``AIRORVAC``,
``VACUUM`` and ``AIR`` are honoured; SDSS ``loglam`` is vacuum.

Why not specutils' loaders (``wcs1d-fits``, ``tabular-fits``, ``SDSS-III/IV spec``): specutils is an
optional extra of the core package, its ``Spectrum`` does not report the medium, which preprocessing
needs, and headerless CSV/text and our HDF5 store would still need readers of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from remap_lib.fileio import RemapDataError, require_nonempty
from remap_lib.spectra.inputfiles import file_kind, os_errors_named

POSITIONAL_COLUMNS = ("wave", "flux", "error")  # headerless text and CSV: wavelength (Å), flux[, error]

# Column names we recognise, lower case, in order of preference.
WAVE_COLUMNS = ("wave", "wavelength", "wavelengths", "lambda", "lam", "awav", "loglam")
FLUX_COLUMNS = ("flux", "spec", "spectrum", "fnu", "flam")
IVAR_COLUMNS = ("ivar", "inverse_variance", "invvar")
ERROR_COLUMNS = ("error", "err", "sigma", "flux_err", "flux_error", "uncertainty", "noise", "e_flux")
MASK_COLUMNS = ("mask", "and_mask", "bad")
NAME_COLUMNS = ("id", "name", "object", "objname", "star")

_UNIT_TO_ANGSTROM = {"angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "aa": 1.0, "å": 1.0, "0.1 nm": 1.0,
                     "nm": 10.0, "nanometer": 10.0, "um": 1e4, "micron": 1e4, "micrometer": 1e4, "m": 1e10}


@dataclass
class RawSpectrum:
    """One observed spectrum as read: wavelengths in Å, the medium if declared, optional ivar/mask."""

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray | None = None
    mask: np.ndarray | None = None
    medium: str | None = None  # "air", "vacuum" or None (the file does not say)
    source: str = "<array>"  # file (and HDU/row) it came from, for messages
    name: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class StoreSpectra:
    """Rows of a project HDF5 store: already on ``instrument``'s grid and continuum-normalized."""

    path: Path
    start: int
    wave: np.ndarray
    flux: np.ndarray
    mask: np.ndarray
    ids: np.ndarray
    instrument_dict: dict


def count_spectra(path) -> int:
    """How many spectra ``path`` holds, reading headers only where the format allows."""
    kind = file_kind(path)
    with os_errors_named(path):
        if kind == "hdf5":
            from remap_lib.data.dataset import _open

            with _open(path) as h5:
                return int(h5["flux"].shape[0])
        if kind == "text":  # always one spectrum: its problems are found when it is read
            require_nonempty(path)
            return 1
        if kind == "table":  # no header to consult; array columns make one spectrum per row
            return len(read_table_file(path))
        with _open_fits(path) as hdul:
            hdu, _ = _fits_spectrum_hdu(hdul, path)
            if hdu.is_image:
                return 1 if hdu.header.get("NAXIS", 0) == 1 else int(hdu.header["NAXIS2"])
            flux = _pick({c.name.lower(): c for c in hdu.columns}, FLUX_COLUMNS)
            return int(hdu.header["NAXIS2"]) if _is_array_column(flux) else 1


def read_spectra(path, start: int = 0, stop: int | None = None) -> list[RawSpectrum] | StoreSpectra:
    """Spectra ``start:stop`` of the file ``path`` (all by default)."""
    kind = file_kind(path)
    with os_errors_named(path):
        if kind == "hdf5":
            return read_store(path, start, stop)
        readers = {"fits": read_fits, "table": read_table_file, "text": read_text_file}
        return readers[kind](path)[start:stop]


# -- units and medium ---------------------------------------------------------------------------
def angstrom_factor(unit, source) -> float:
    """Multiplier taking wavelengths in ``unit`` to Å (None/blank = Å)."""
    if unit is None:
        return 1.0
    text = str(unit).strip().lower()
    if text in ("", "none"):
        return 1.0
    if text in _UNIT_TO_ANGSTROM:
        return _UNIT_TO_ANGSTROM[text]
    try:
        import astropy.units as u

        return float(u.Unit(str(unit)).to(u.AA))
    except Exception as err:  # noqa: BLE001 - any parse failure means the same to the user
        raise RemapDataError(source, f"wavelength unit {unit!r} is not a length unit remap understands") from err


def declared_medium(header, source) -> str | None:
    """Medium from FITS keywords; None when the header does not say."""
    for key in ("AIRORVAC", "WAVEMED", "MEDIUM"):
        value = str(header.get(key, "")).strip().lower()
        if value.startswith("air"):
            return "air"
        if value.startswith("vac"):
            return "vacuum"
    if "VACUUM" in header:
        return "vacuum" if bool(header["VACUUM"]) else "air"
    if "AIR" in header:
        return "air" if bool(header["AIR"]) else "vacuum"
    ctype = str(header.get("CTYPE1", "")).strip().upper()
    if ctype.startswith("AWAV"):
        return "air"
    if ctype.startswith("WAVE") or ctype.startswith("VWAV"):
        return "vacuum"
    return None


# -- FITS ---------------------------------------------------------------------------------------
def _open_fits(path):
    from astropy.io import fits

    path = require_nonempty(path)
    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("silentfix")
        for hdu in hdul:  # force the data to be read now: a truncated file fails here, by name
            _ = hdu.data
    except RemapDataError:
        raise
    except Exception as err:  # astropy raises OSError, TypeError, ValueError for damaged files
        raise RemapDataError(path, f"not a readable FITS file, truncated or corrupt? ({err})") from err
    return hdul


def _pick(columns: dict, names) -> object | None:
    for name in names:
        if name in columns:
            return columns[name]
    return None


def _is_array_column(col) -> bool:
    fmt = str(getattr(col, "format", ""))
    digits = "".join(ch for ch in fmt if ch.isdigit())
    return bool(digits) and int(digits) > 1 or fmt.startswith(("P", "Q"))


def _fits_spectrum_hdu(hdul, path):
    """The HDU holding the spectrum: the first image with data, else the first table with a flux column."""
    for i, hdu in enumerate(hdul):
        if hdu.is_image and hdu.data is not None and hdu.header.get("NAXIS", 0) in (1, 2):
            if hdu.name.upper() in ("IVAR", "ERROR", "ERR", "SIGMA", "MASK"):
                continue
            return hdu, i
    for i, hdu in enumerate(hdul):
        if not hdu.is_image and hasattr(hdu, "columns"):
            if _pick({c.name.lower(): c for c in hdu.columns}, FLUX_COLUMNS) is not None:
                return hdu, i
    tables = [f"HDU {i} ({hdu.name}): {[c.name for c in hdu.columns]}" for i, hdu in enumerate(hdul)
              if hasattr(hdu, "columns")]
    if tables:
        raise RemapDataError(path, f"no flux column in any table (looked for {', '.join(FLUX_COLUMNS)}); "
                             f"found {'; '.join(tables)}")
    raise RemapDataError(path, "no spectrum: no 1-D/2-D image with data and no table with a flux column")


def fits_wcs_wavelengths(header, npix: int, source) -> np.ndarray:
    """Pixel wavelengths (Å) from a 1-D spectral WCS (linear, log10 with DC-FLAG=1, or WAVE-LOG)."""
    if "CRVAL1" not in header:
        raise RemapDataError(source, "image has no CRVAL1: cannot compute wavelengths (no spectral WCS)")
    step = header.get("CDELT1", header.get("CD1_1"))
    if step is None:
        raise RemapDataError(source, "image has CRVAL1 but neither CDELT1 nor CD1_1: no wavelength step")
    pix = np.arange(1, npix + 1, dtype=np.float64)
    x = float(header["CRVAL1"]) + float(step) * (pix - float(header.get("CRPIX1", 1.0)))
    ctype = str(header.get("CTYPE1", "")).strip().upper()
    if int(header.get("DC-FLAG", 0)) == 1:
        wave = 10.0**x
    elif ctype.endswith("-LOG"):
        crval = float(header["CRVAL1"])
        wave = crval * np.exp((x - crval) / crval)
    else:
        wave = x
    return wave * angstrom_factor(header.get("CUNIT1"), source)


def read_fits(path) -> list[RawSpectrum]:
    """Spectra in a FITS file (image with WCS, or table); see the module docstring."""
    with _open_fits(path) as hdul:
        hdu, index = _fits_spectrum_hdu(hdul, path)
        medium = declared_medium(hdul[0].header, path) or declared_medium(hdu.header, path)
        name = str(hdul[0].header.get("OBJECT", "") or hdu.header.get("OBJECT", "")).strip()
        if hdu.is_image:
            return _read_fits_image(hdul, hdu, path, medium, name)
        return _read_columns({c.name.lower(): np.asarray(hdu.data[c.name]) for c in hdu.columns},
                             {c.name.lower(): c.unit for c in hdu.columns}, f"{path}[{index}]", medium, name,
                             array_rows=_is_array_column(_pick({c.name.lower(): c for c in hdu.columns},
                                                               FLUX_COLUMNS)))


def _read_fits_image(hdul, hdu, path, medium, name) -> list[RawSpectrum]:
    flux = np.asarray(hdu.data, dtype=np.float64)
    wave = fits_wcs_wavelengths(hdu.header, flux.shape[-1], path)
    extras = {}
    for ext in hdul:
        key = ext.name.upper()
        if ext.is_image and ext.data is not None and key in ("IVAR", "ERROR", "ERR", "SIGMA", "MASK"):
            if np.shape(ext.data) != flux.shape:
                raise RemapDataError(path, f"extension {key} has shape {np.shape(ext.data)}, flux has {flux.shape}")
            extras[key] = np.asarray(ext.data, dtype=np.float64)
    ivar = extras.get("IVAR")
    if ivar is None:
        err = extras.get("ERROR", extras.get("ERR", extras.get("SIGMA")))
        ivar = None if err is None else _ivar_from_error(err)
    mask = None if "MASK" not in extras else extras["MASK"] != 0
    rows = flux if flux.ndim == 2 else flux[None]
    out = []
    for i, f in enumerate(rows):
        pick = (lambda a, i=i: None if a is None else (a[i] if flux.ndim == 2 else a))
        out.append(RawSpectrum(wave, f, pick(ivar), pick(mask), medium,
                               f"{path}" if flux.ndim == 1 else f"{path}[row {i}]", name))
    return out


def _ivar_from_error(err: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
    return ivar


def _read_columns(cols: dict, units: dict, source, medium, name, array_rows: bool) -> list[RawSpectrum]:
    """RawSpectra from named columns (lower-case keys): one per row if ``array_rows``, else one."""
    flux_key = next((k for k in FLUX_COLUMNS if k in cols), None)
    wave_key = next((k for k in WAVE_COLUMNS if k in cols), None)
    if flux_key is None or wave_key is None:
        missing = [what for what, key in (("flux", flux_key), ("wavelength", wave_key)) if key is None]
        raise RemapDataError(source, f"no {' or '.join(missing)} column (looked for "
                             f"{', '.join(FLUX_COLUMNS if flux_key is None else WAVE_COLUMNS)}); "
                             f"found columns {sorted(cols)}")
    wave = np.asarray(cols[wave_key], dtype=np.float64)
    if wave_key == "loglam":  # SDSS: log10 of the vacuum wavelength in Å
        wave = 10.0**wave
        medium = medium or "vacuum"
    else:
        wave = wave * angstrom_factor(units.get(wave_key), source)
        if wave_key == "awav":
            medium = medium or "air"
    flux = np.asarray(cols[flux_key], dtype=np.float64)
    ivar_key = next((k for k in IVAR_COLUMNS if k in cols), None)
    err_key = next((k for k in ERROR_COLUMNS if k in cols), None)
    ivar = (np.asarray(cols[ivar_key], dtype=np.float64) if ivar_key
            else _ivar_from_error(np.asarray(cols[err_key], dtype=np.float64)) if err_key else None)
    mask_key = next((k for k in MASK_COLUMNS if k in cols), None)
    mask = None if mask_key is None else np.asarray(cols[mask_key]) != 0
    names = next((np.asarray(cols[k]).astype(str) for k in NAME_COLUMNS if k in cols), None)
    if not array_rows:
        return [RawSpectrum(wave, flux, ivar, mask, medium, str(source), name)]
    out = []
    for i in range(len(flux)):
        w = wave[i] if wave.ndim == 2 else wave
        out.append(RawSpectrum(w, flux[i], None if ivar is None else ivar[i], None if mask is None else mask[i],
                               medium, f"{source}[row {i}]", names[i] if names is not None else name))
    return out


# -- ECSV / CSV ---------------------------------------------------------------------------------
def read_table_file(path) -> list[RawSpectrum]:
    """One spectrum from an ECSV or CSV table (column names as for FITS tables; CSV may have no header)."""
    from astropy.table import Table

    path = require_nonempty(path)
    is_ecsv = str(path).lower().endswith(".ecsv")
    if not is_ecsv and _first_row_is_numbers(path, ","):
        return read_text_file(path, delimiter=",")
    fmt = "ascii.ecsv" if is_ecsv else "ascii.csv"
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:  # the locale's codec may not be UTF-8
            table = Table.read(fh.read().splitlines(), format=fmt)
    except Exception as err:  # noqa: BLE001 - astropy's parsers raise many types
        raise RemapDataError(path, f"not a readable {fmt[6:].upper()} table ({err})") from err
    if len(table) == 0:
        raise RemapDataError(path, "table has no rows")
    return table_to_spectra(table, str(path))


# -- plain text ----------------------------------------------------------------------------------
def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _split(line: str, delimiter: str | None) -> list[str]:
    return [t.strip() for t in line.split(delimiter)] if delimiter else line.split()


def _first_row_is_numbers(path, delimiter) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if text and not text.startswith("#"):
                return all(_is_number(t) for t in _split(text, delimiter) if t)
    return False


def read_text_file(path, delimiter: str | None = None) -> list[RawSpectrum]:
    """One spectrum from columns of numbers separated by whitespace (or ``delimiter``).

    Columns are named by a header line (or by the last comment line before the numbers, as in
    ``# wave flux err``) when their names are ones remap knows; otherwise they are wavelength (Å),
    flux and optionally error, by position, and the row's notes say so.
    """
    path = require_nonempty(path)
    with os_errors_named(path):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kind = "CSV" if delimiter == "," else "text"
    comment, header, rows, row_lines = None, None, [], []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            if not rows and header is None:
                comment = text.lstrip("#").strip()
            continue
        tokens = _split(text, delimiter)
        if not rows and header is None and not all(_is_number(t) for t in tokens if t):
            header = [t.lower() for t in tokens]
            continue
        rows.append(tokens)
        row_lines.append(number)
    if not rows:
        raise RemapDataError(path, f"no rows of numbers in this {kind} file")
    ncol = len(rows[0])
    for tokens, number in zip(rows, row_lines, strict=True):
        word = next((t for t in tokens if t and not _is_number(t)), None)
        if word is not None:
            raise RemapDataError(path, f"line {number}: {word!r} is not a number; is this a {kind} spectrum?")
        if len(tokens) != ncol:
            raise RemapDataError(path, f"line {number} has {len(tokens)} columns, line {row_lines[0]} has {ncol}")
    values = np.array([[t if t else "nan" for t in r] for r in rows], dtype=np.float64)  # empty CSV field: NaN
    if header is None and comment is not None and len(_split(comment, delimiter)) == ncol:
        named = [t.lower() for t in _split(comment, delimiter)]
        if any(n in WAVE_COLUMNS for n in named) and any(n in FLUX_COLUMNS for n in named):
            header = named
    if header is not None and len(header) != ncol:
        raise RemapDataError(path, f"the header names {len(header)} columns ({' '.join(header)}) but the rows "
                             f"have {ncol}")
    known = header is not None and any(n in WAVE_COLUMNS for n in header) and any(n in FLUX_COLUMNS for n in header)
    notes = []
    if not known:
        if ncol not in (2, 3):
            what = f"columns {' '.join(header)} are not ones remap knows and" if header else "no header and"
            raise RemapDataError(path, f"{what} {ncol} columns: remap reads wavelength (Å), flux and optionally "
                                 "error by position from 2 or 3 columns, or columns named in a header line "
                                 f"(wavelength: {', '.join(WAVE_COLUMNS)}; flux: {', '.join(FLUX_COLUMNS)})")
        notes.append(f"columns read by position as {', '.join(POSITIONAL_COLUMNS[:ncol])} (wavelengths in Å)"
                     + (f"; header was: {' '.join(header)}" if header else ""))
        header = list(POSITIONAL_COLUMNS[:ncol])
    [spectrum] = _read_columns({name: values[:, i] for i, name in enumerate(header)}, {}, str(path), None, "",
                               array_rows=False)
    spectrum.notes += notes
    return [spectrum]


def table_to_spectra(table, source="<Table>") -> list[RawSpectrum]:
    """RawSpectra from an astropy Table: one spectrum (a row per pixel) or one per row (array columns)."""
    cols = {name.lower(): _column_values(table[name]) for name in table.colnames}
    units = {name.lower(): table[name].unit for name in table.colnames}
    medium = declared_medium({k.upper(): v for k, v in table.meta.items()}, source) if table.meta else None
    flux_key = next((k for k in FLUX_COLUMNS if k in cols), None)
    array_rows = flux_key is not None and np.ndim(cols[flux_key]) == 2
    return _read_columns(cols, units, source, medium, str(table.meta.get("OBJECT", "")) if table.meta else "",
                         array_rows)


def _column_values(column) -> np.ndarray:
    values = np.ma.filled(column.astype(float), np.nan) if np.ma.isMaskedArray(column) and \
        column.dtype.kind in "fiu" else np.asarray(column)
    return values


# -- HDF5 store ---------------------------------------------------------------------------------
def read_store(path, start: int = 0, stop: int | None = None) -> StoreSpectra:
    """Rows ``start:stop`` of a project HDF5 store, without reading the rest."""
    import json

    from remap_lib.data.dataset import _open

    with _open(path) as h5:
        try:
            n = h5["flux"].shape[0]
            stop = n if stop is None else min(stop, n)
            return StoreSpectra(Path(path), start, h5["wave"][:], h5["flux"][start:stop], h5["mask"][start:stop],
                                h5["ids"].asstr()[start:stop], json.loads(h5.attrs["instrument"]))
        except (OSError, KeyError, ValueError) as err:
            raise RemapDataError(path, f"damaged store, truncated? ({err})") from err


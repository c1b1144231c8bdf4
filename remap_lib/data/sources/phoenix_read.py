"""Reading PHOENIX-ACES-AGSS-COND-2011 files: the shared wavelength grid and one flux file.

Every read checks what it reads: a readable 1-D FITS image of the expected length, the labels in
its header (``PHXTEFF``, ``PHXLOGG``, ``PHXM_H``, ``PHXALPHA``) matching its file name, finite flux.
A bad file raises :class:`~remap_lib.fileio.RemapDataError` naming the file and the problem.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from remap_lib.data.sources.phoenix import (
    FLUX_UNIT,
    HEADER_KEYS,
    WAVE_UNIT,
    PhoenixNode,
    node_text,
    parse_phoenix_filename,
    without_negative_zero,
)
from remap_lib.fileio import RemapDataError, require_nonempty

__all__ = ["PhoenixSpectrum", "read_flux", "read_phoenix", "read_wave", "read_wave_uncached"]


@dataclass(frozen=True)
class PhoenixSpectrum:
    """One PHOENIX spectrum (possibly cropped). ``wave`` in vacuum Å, ``flux`` in erg/s/cm²/cm."""

    wave: np.ndarray
    flux: np.ndarray
    teff: float
    logg: float
    monh: float
    alpha: float
    path: Path
    wave_unit: str = WAVE_UNIT
    flux_unit: str = FLUX_UNIT
    vacuum: bool = True
    header: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def labels(self) -> PhoenixNode:
        return PhoenixNode(self.teff, self.logg, self.monh, self.alpha)


@contextlib.contextmanager
def _open_1d(path, source=None):
    """Open a 1-D primary-HDU FITS file; yield (hdu, npix) after checking it is complete.

    ``source`` is the name used in error messages (defaults to the path).
    """
    path = require_nonempty(path, source)
    source = path if source is None else source
    size = path.stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns on truncation; we check it ourselves
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
        except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
            raise RemapDataError(source, f"not a readable FITS file ({err})") from err
        try:
            try:
                hdu = hdul[0]
                header = hdu.header
                info = hdul.fileinfo(0)
            except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
                raise RemapDataError(source, f"not a readable FITS file ({err})") from err
            naxis = header.get("NAXIS", 0)
            if naxis != 1:
                raise RemapDataError(source, f"primary HDU must be a 1-D array, got NAXIS={naxis}")
            npix = int(header.get("NAXIS1", 0))
            if npix <= 0:
                raise RemapDataError(source, f"primary HDU is empty (NAXIS1={npix})")
            needed = info["datLoc"] + npix * abs(int(header["BITPIX"])) // 8
            if size < needed:
                raise RemapDataError(source, f"truncated FITS: file has {size} bytes, header promises "
                                             f"{npix} pixels needing {needed} bytes")
            yield hdu, npix
        finally:
            hdul.close()


def _read_section(hdu, source, start: int, stop: int) -> np.ndarray:
    try:
        data = np.asarray(hdu.section[start:stop], dtype=np.float64)
    except (OSError, ValueError, TypeError) as err:
        raise RemapDataError(source, f"could not read pixels {start}:{stop} ({err})") from err
    if data.shape != (stop - start,):
        raise RemapDataError(source, f"read {data.shape} pixels, expected {stop - start} (truncated?)")
    return data


def read_wave_uncached(path, source=None) -> np.ndarray:
    source = source if source is not None else path
    with _open_1d(path, source) as (hdu, npix):
        wave = _read_section(hdu, source, 0, npix)
    if not np.all(np.isfinite(wave)):
        raise RemapDataError(source, "wavelength grid has non-finite values")
    if npix > 1 and not np.all(np.diff(wave) > 0):
        raise RemapDataError(source, "wavelength grid is not strictly increasing")
    if wave[0] <= 0:
        raise RemapDataError(source, f"wavelength grid starts at {wave[0]} <= 0")
    wave.setflags(write=False)
    return wave


@functools.lru_cache(maxsize=4)
def _read_wave_cached(path: str, size: int, mtime_ns: int) -> np.ndarray:
    return read_wave_uncached(Path(path))


def read_wave(path) -> np.ndarray:
    """The PHOENIX wavelength grid (vacuum Å, float64, read-only), cached per file version."""
    path = require_nonempty(path).resolve()
    st = path.stat()
    return _read_wave_cached(str(path), st.st_size, st.st_mtime_ns)


def _header_labels(header, source) -> tuple[PhoenixNode, dict]:
    missing = [key for key in HEADER_KEYS.values() if key not in header]
    if missing:
        raise RemapDataError(source, f"missing PHOENIX header keys: {', '.join(missing)}")
    try:
        values = {name: float(header[key]) for name, key in HEADER_KEYS.items()}
    except (TypeError, ValueError) as err:
        raise RemapDataError(source, f"non-numeric PHOENIX header label ({err})") from err
    node = PhoenixNode(values["teff"], *(without_negative_zero(values[k]) for k in ("logg", "monh", "alpha")))
    keep = {k: header[k] for k in ("BUNIT", "PHXREFF", "PHXLUM", "PHXMASS", "PHXXI_L", "PHXXI_M",
                                   "PHXXI_N", "PHXDUST", "PHXEOS", "PHXBUILD", "PHXVER") if k in header}
    keep.update({key: header[key] for key in HEADER_KEYS.values()})
    return node, keep


def _labels_match(a: PhoenixNode, b: PhoenixNode) -> bool:
    return (abs(a.teff - b.teff) < 0.5 and abs(a.logg - b.logg) < 1e-3
            and abs(a.monh - b.monh) < 1e-3 and abs(a.alpha - b.alpha) < 1e-3)


def read_flux(path, *, source=None, npix_expected: int | None = None, expected: PhoenixNode | None = None,
               sl: slice | None = None):
    """Checked flux read; returns (flux, labels, header dict, unit)."""
    source = source if source is not None else path
    with _open_1d(path, source) as (hdu, npix):
        node, header = _header_labels(hdu.header, source)
        if npix_expected is not None and npix != npix_expected:
            raise RemapDataError(source, f"flux has {npix} pixels but the wavelength grid has "
                                         f"{npix_expected}")
        if expected is not None and not _labels_match(node, expected):
            raise RemapDataError(source, f"header labels ({node_text(node)}) do not match the file name "
                                         f"({node_text(expected)})")
        start, stop = (0, npix) if sl is None else (sl.start, sl.stop)
        flux = _read_section(hdu, source, start, stop)
        unit = str(hdu.header.get("BUNIT", FLUX_UNIT)).strip() or FLUX_UNIT
    if flux.size and not np.isfinite(flux).any():
        raise RemapDataError(source, "flux has no finite values (all NaN/inf)")
    return flux, node, header, unit


def read_phoenix(flux_path, wave_path, window: tuple[float, float] | None = None, *,
                 check_filename: bool = True) -> PhoenixSpectrum:
    """Read one PHOENIX HiRes spectrum.

    ``window=(wmin, wmax)`` (vacuum Å) reads only the pixels inside it, so a cropped read needs
    little memory. Labels come from the header and, when the file has a canonical PHOENIX name
    (and ``check_filename``), must agree with the name. Problems raise :class:`RemapDataError`.
    """
    flux_path = Path(flux_path)
    wave = read_wave(wave_path)
    expected = None
    if check_filename:
        with contextlib.suppress(ValueError):
            expected = parse_phoenix_filename(flux_path.name)
    sl = None
    if window is not None:
        wmin, wmax = (float(w) for w in window)
        if not wmin < wmax:
            raise ValueError(f"window must be (wmin, wmax) with wmin < wmax, got {window!r}")
        start = bisect.bisect_left(wave, wmin)
        stop = bisect.bisect_right(wave, wmax)
        if stop <= start:
            raise RemapDataError(wave_path, f"window {wmin}-{wmax} Å is outside the wavelength grid "
                                            f"{wave[0]:.1f}-{wave[-1]:.1f} Å")
        sl = slice(start, stop)
    flux, node, header, unit = read_flux(flux_path, npix_expected=wave.size, expected=expected, sl=sl)
    w = wave if sl is None else wave[sl]
    return PhoenixSpectrum(wave=np.array(w, dtype=np.float64), flux=flux, teff=node.teff, logg=node.logg,
                           monh=node.monh, alpha=node.alpha, path=flux_path, flux_unit=unit, header=header)

"""PHOENIX-ACES-AGSS-COND-2011 high-resolution spectra (Husser et al. 2013): names, reader, downloader.

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

Downloads go to ``cache_dir()/phoenix/<the server's relative path>``, through a ``.part`` file
that is resumed with HTTP Range requests, checked (size, optional sha256, readable FITS of the
right length and labels) and only then renamed into place, so the cache never holds a bad file.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from tqdm import tqdm

from remap_lib.data.cache import cache_dir
from remap_lib.fileio import RemapDataError, require_nonempty, verify_sha256

__all__ = [
    "DEFAULT_BASE_URL",
    "HIRES_FLUX_BYTES",
    "HIRES_NPIX",
    "HIRES_RESOLUTION",
    "WAVE_RELPATH",
    "PhoenixNode",
    "PhoenixSpectrum",
    "GridFetchSummary",
    "GRID_TEFF",
    "GRID_LOGG",
    "GRID_MONH",
    "GRID_ALPHA",
    "validate_node",
    "phoenix_filename",
    "phoenix_folder",
    "phoenix_relpath",
    "parse_phoenix_filename",
    "phoenix_base_url",
    "phoenix_url",
    "phoenix_cache_path",
    "read_wave",
    "read_phoenix",
    "download_wave",
    "download_phoenix",
    "fetch_phoenix_grid",
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


def _zero(x: float) -> float:
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
    return PhoenixNode(float(round(teff)), _zero(round(logg, 2)), _zero(round(monh, 1)),
                       _zero(round(alpha, 2)))


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
    node = PhoenixNode(float(int(m["teff"])), _zero(logg), _zero(float(m["monh"])),
                       _zero(float(m["alpha"])) if m["alpha"] else 0.0)
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


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


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
    if source is None:
        source = path = require_nonempty(path)
    else:
        path = _require_nonempty_as(path, source)
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


def _require_nonempty_as(path, source) -> Path:
    path = Path(path)
    if not path.exists():
        raise RemapDataError(source, "file does not exist")
    if path.stat().st_size == 0:
        raise RemapDataError(source, "file is empty (0 bytes)")
    return path


def _read_section(hdu, source, start: int, stop: int) -> np.ndarray:
    try:
        data = np.asarray(hdu.section[start:stop], dtype=np.float64)
    except (OSError, ValueError, TypeError) as err:
        raise RemapDataError(source, f"could not read pixels {start}:{stop} ({err})") from err
    if data.shape != (stop - start,):
        raise RemapDataError(source, f"read {data.shape} pixels, expected {stop - start} (truncated?)")
    return data


def _read_wave_uncached(path, source=None) -> np.ndarray:
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
    return _read_wave_uncached(Path(path))


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
    node = PhoenixNode(values["teff"], _zero(values["logg"]), _zero(values["monh"]), _zero(values["alpha"]))
    keep = {k: header[k] for k in ("BUNIT", "PHXREFF", "PHXLUM", "PHXMASS", "PHXXI_L", "PHXXI_M",
                                   "PHXXI_N", "PHXDUST", "PHXEOS", "PHXBUILD", "PHXVER") if k in header}
    keep.update({key: header[key] for key in HEADER_KEYS.values()})
    return node, keep


def _labels_match(a: PhoenixNode, b: PhoenixNode) -> bool:
    return (abs(a.teff - b.teff) < 0.5 and abs(a.logg - b.logg) < 1e-3
            and abs(a.monh - b.monh) < 1e-3 and abs(a.alpha - b.alpha) < 1e-3)


def _fmt_node(n: PhoenixNode) -> str:
    return f"Teff={n.teff:g}, log g={n.logg:g}, [M/H]={n.monh:+g}, [alpha/M]={n.alpha:+g}"


def _read_flux(path, *, source=None, npix_expected: int | None = None, expected: PhoenixNode | None = None,
               sl: slice | None = None):
    """Checked flux read; returns (flux, labels, header dict, unit)."""
    source = source if source is not None else path
    with _open_1d(path, source) as (hdu, npix):
        node, header = _header_labels(hdu.header, source)
        if npix_expected is not None and npix != npix_expected:
            raise RemapDataError(source, f"flux has {npix} pixels but the wavelength grid has "
                                         f"{npix_expected}")
        if expected is not None and not _labels_match(node, expected):
            raise RemapDataError(source, f"header labels ({_fmt_node(node)}) do not match the file name "
                                         f"({_fmt_node(expected)})")
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
    flux, node, header, unit = _read_flux(flux_path, npix_expected=wave.size, expected=expected, sl=sl)
    w = wave if sl is None else wave[sl]
    return PhoenixSpectrum(wave=np.array(w, dtype=np.float64), flux=flux, teff=node.teff, logg=node.logg,
                           monh=node.monh, alpha=node.alpha, path=flux_path, flux_unit=unit, header=header)


# --------------------------------------------------------------------------------------------
# Downloader
# --------------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A transient failure: dropped connection, short body, 5xx."""


class _RestartFromZero(_Retryable):
    pass


_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_USER_AGENT = "remap-phoenix/0.1 (+python urllib)"


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, desc: str) -> int | None:
    """One HTTP attempt, appending to ``part`` from its current size. Returns the expected total."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            m = re.match(r"bytes\s+\*/(\d+)", err.headers.get("Content-Range", "") or "")
            err.close()
            if m and int(m.group(1)) == offset:
                return offset  # the .part is already complete
            part.unlink(missing_ok=True)
            raise _RestartFromZero(f"server refused Range bytes={offset}- (416); restarting") from err
        err.close()
        if err.code in (408, 429) or err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from err
        raise
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", "") or "")
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _RestartFromZero(f"unexpected Content-Range {resp.headers.get('Content-Range')!r} "
                                       f"for Range bytes={offset}-; restarting")
            total = int(m.group(3)) if m.group(3) != "*" else None
            end = int(m.group(2)) + 1
            if length is not None and length != end - offset:
                raise _Retryable(f"Content-Length {length} disagrees with Content-Range "
                                       f"{resp.headers.get('Content-Range')!r}")
            mode = "ab"
        elif status == 200:
            offset, total, mode = 0, length, "wb"  # a server ignoring Range: start again from zero
        else:
            raise _Retryable(f"unexpected HTTP status {status}")
        got = offset
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=desc, disable=not progress,
                                          leave=False) as bar:
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                fh.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
                if total is not None and got > total:
                    break
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and got != total:
        if got > total:
            part.unlink(missing_ok=True)
            raise _RestartFromZero(f"received {got} bytes, more than the {total} announced; restarting")
        raise _Retryable(f"connection dropped after {got} of {total} bytes")
    return total


_TRANSIENT = (_Retryable, urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
              http.client.HTTPException, OSError)


def _download(url: str, dest: Path, *, validate, retries: int, backoff: float, timeout: float,
              expected_sha256: str | None, progress: bool) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` with resume, retries and checks."""
    if dest.exists():
        if expected_sha256:
            verify_sha256(dest, expected_sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    retries = max(0, int(retries))
    last: BaseException | None = None
    total = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            total = _fetch_once(url, part, timeout, progress, dest.name)
            last = None
            break
        except urllib.error.HTTPError as err:  # non-transient HTTP error: no retries
            if err.code == 404:
                raise RemapDataError(url, "HTTP 404 Not Found: no such file on the server "
                                          "(check the grid node and the base URL)") from err
            raise RemapDataError(url, f"HTTP {err.code} {err.reason}") from err
        except _TRANSIENT as err:
            last = err
    if last is not None:
        kept = part.exists() and part.stat().st_size > 0
        raise RemapDataError(url, f"download failed after {retries + 1} attempts: {last}"
                             + (f" (partial file kept for resume: {part})" if kept else "")) from last
    try:
        size = part.stat().st_size if part.exists() else 0
        if total is not None and size != total:
            raise RemapDataError(url, f"downloaded {size} bytes, server announced {total}")
        if expected_sha256:
            verify_sha256(part, expected_sha256)
        validate(part)
    except RemapDataError as err:
        part.unlink(missing_ok=True)
        raise RemapDataError(url, f"corrupt download, deleted: {err.problem}") from err
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def _wave_validator(url: str, expected_npix: int | None):
    def validate(part: Path) -> None:
        wave = _read_wave_uncached(part, source=url)
        if expected_npix is not None and wave.size != expected_npix:
            raise RemapDataError(url, f"wavelength grid has {wave.size} pixels, expected {expected_npix}")
    return validate


def download_wave(cache=None, base_url=None, retries: int = 4, backoff: float = 0.5, timeout: float = 30,
                  expected_sha256: str | None = None, progress: bool = True,
                  expected_npix: int | None = None) -> Path:
    """Download (once) ``HiResFITS/WAVE_PHOENIX-ACES-AGSS-COND-2011.fits`` into the cache.

    ``expected_npix`` (e.g. :data:`HIRES_NPIX`) additionally checks the length; by default any
    1-D, finite, strictly increasing grid is accepted.
    """
    url = phoenix_url(WAVE_RELPATH, base_url)
    dest = phoenix_cache_path(WAVE_RELPATH, cache)
    return _download(url, dest, validate=_wave_validator(url, expected_npix), retries=retries,
                     backoff=backoff, timeout=timeout, expected_sha256=expected_sha256, progress=progress)


def download_phoenix(teff, logg, monh, alpha=0.0, cache=None, base_url=None, retries: int = 4,
                     backoff: float = 0.5, timeout: float = 30, expected_sha256: str | None = None,
                     progress: bool = True, *, wave_path=None) -> Path:
    """Download (once) one HiRes spectrum into ``<cache>/phoenix/<server path>``; return its path.

    Partial downloads resume with HTTP Range; transient failures (dropped connections, timeouts,
    5xx) are retried ``retries`` times with exponential backoff ``backoff * 2**k`` s; 404 and other
    4xx fail at once. The finished file must match Content-Length/Content-Range, ``expected_sha256``
    when given, and be a readable FITS whose length equals the wavelength grid (``wave_path``, by
    default the cached WAVE file, downloaded first) and whose header labels equal the node;
    otherwise it is deleted and :class:`RemapDataError` is raised.
    """
    node = validate_node(teff, logg, monh, alpha)
    relpath = phoenix_relpath(*node)
    url = phoenix_url(relpath, base_url)
    dest = phoenix_cache_path(relpath, cache)
    if dest.exists() and not expected_sha256:
        return dest
    if wave_path is None:
        wave_path = download_wave(cache=cache, base_url=base_url, retries=retries, backoff=backoff,
                                  timeout=timeout, progress=progress)
    npix = read_wave(wave_path).size

    def validate(part: Path) -> None:
        _read_flux(part, source=url, npix_expected=npix, expected=node, sl=None)

    return _download(url, dest, validate=validate, retries=retries, backoff=backoff, timeout=timeout,
                     expected_sha256=expected_sha256, progress=progress)


@dataclass
class GridFetchSummary:
    """What :func:`fetch_phoenix_grid` did."""

    downloaded: list[Path] = field(default_factory=list)
    cached: list[Path] = field(default_factory=list)
    failed: list[tuple[PhoenixNode, str]] = field(default_factory=list)
    wave: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def paths(self) -> list[Path]:
        return self.cached + self.downloaded

    def __str__(self) -> str:
        lines = [f"PHOENIX grid: {len(self.downloaded)} downloaded, {len(self.cached)} already cached, "
                 f"{len(self.failed)} failed"]
        lines += [f"  FAILED {_fmt_node(n)}: {msg}" for n, msg in self.failed]
        return "\n".join(lines)


def _as_node(item) -> PhoenixNode:
    if isinstance(item, dict):
        return validate_node(item["teff"], item["logg"], item["monh"], item.get("alpha", 0.0))
    return validate_node(*item)


def fetch_phoenix_grid(nodes: Iterable, cache=None, base_url=None, retries: int = 4, backoff: float = 0.5,
                       timeout: float = 30, progress: bool = True, keep_going: bool = True,
                       sha256: dict | None = None) -> GridFetchSummary:
    """Download many nodes (tuples ``(teff, logg, monh[, alpha])`` or dicts).

    All nodes are validated before anything is fetched (ValueError). Each file resumes on its own
    from its ``.part``; with ``keep_going`` a failing node is recorded in the summary and the rest
    continue, otherwise the first failure is raised. ``sha256`` optionally maps server relative
    paths to expected hashes. Rerunning after an interruption only fetches what is missing.
    """
    todo = list(dict.fromkeys(_as_node(n) for n in nodes))
    summary = GridFetchSummary()
    summary.wave = download_wave(cache=cache, base_url=base_url, retries=retries, backoff=backoff,
                                 timeout=timeout, progress=progress)
    sha256 = sha256 or {}
    for node in tqdm(todo, desc="PHOENIX grid", unit="file", disable=not progress):
        relpath = phoenix_relpath(*node)
        dest = phoenix_cache_path(relpath, cache)
        if dest.exists():
            summary.cached.append(dest)
            continue
        try:
            path = download_phoenix(*node, cache=cache, base_url=base_url, retries=retries, backoff=backoff,
                                    timeout=timeout, expected_sha256=sha256.get(relpath), progress=progress,
                                    wave_path=summary.wave)
        except RemapDataError as err:
            if not keep_going:
                raise
            summary.failed.append((node, str(err)))
            continue
        summary.downloaded.append(path)
    return summary

"""Checks on an input spectrum before anything is done with it: each problem is a
:class:`~remap_lib.fileio.RemapDataError` that names the source and says what is wrong.

Wavelengths must be 1-D, finite, increasing, without duplicates and in Å (nm and µm are recognised and
refused with the factor that would fix them); flux, ivar and mask must match them in shape; ivar must
not be negative; and the instrument window must be covered, up to ``max_uncovered`` of it at each end.
NaN and inf pixels become masked, not errors, unless nothing usable is left.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from remap_lib.fileio import RemapDataError


class Checked(NamedTuple):
    """Validated arrays: float64 copies; ``mask`` is True where a pixel is unusable."""

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray | None
    mask: np.ndarray


def pixel_edges(wave) -> np.ndarray:
    """Pixel edges (n+1) for pixel centres ``wave`` (n): midpoints, ends mirrored (as spectres)."""
    wave = np.asarray(wave, dtype=np.float64)
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate(([2.0 * wave[0] - mid[0]], mid, [2.0 * wave[-1] - mid[-1]]))


#: A window edge missed by less than this share of its wavelength is round-off, not a gap: the same
#: pixels from a FITS WCS (CRVAL1 + CDELT1·i) and from a table differ by ~1e-16·λ.
COVERAGE_RTOL = 1e-9


def uncovered(wave, window) -> tuple[float, float]:
    """Å of ``window`` = (wmin, wmax) beyond the outer pixel edges of ``wave``: (blue end, red end).

    Shortfalls below :data:`COVERAGE_RTOL` of the wavelength count as covered.
    """
    wave = np.asarray(wave, dtype=np.float64)
    wmin, wmax = float(window[0]), float(window[1])
    edges = pixel_edges(wave[[0, 1, -2, -1]])[[0, -1]]
    blue = max(float(edges[0]) - wmin, 0.0)
    red = max(wmax - float(edges[1]), 0.0)
    blue = 0.0 if blue <= COVERAGE_RTOL * wmin else min(blue, wmax - wmin)
    red = 0.0 if red <= COVERAGE_RTOL * wmax else min(red, wmax - wmin)
    return blue, red


def _check_wave(wave, source, window=None, max_uncovered: float = 0.0) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2:
        raise RemapDataError(source, f"wavelength array must be 1-D with at least 2 pixels, got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise RemapDataError(source, f"wavelengths contain NaN/inf ({np.count_nonzero(~np.isfinite(wave))} pixels)")
    step = np.diff(wave)
    if np.any(step == 0):
        i = int(np.flatnonzero(step == 0)[0])
        raise RemapDataError(
            source,
            f"duplicated wavelengths: {np.count_nonzero(step == 0)} pixel(s) repeat the previous wavelength "
            f"(first at index {i + 1}, {wave[i]:.6g} Å)",
        )
    if np.any(step < 0):
        i = int(np.flatnonzero(step < 0)[0])
        raise RemapDataError(
            source,
            f"wavelengths are not monotonically increasing (index {i}: {wave[i]:.6g} then {wave[i + 1]:.6g}); "
            "sort (or reverse) the spectrum first",
        )
    if window is not None:
        _check_coverage(wave, source, window, max_uncovered)
    return wave


def _check_coverage(wave, source, window, max_uncovered: float) -> None:
    """RemapDataError when more than ``max_uncovered`` of ``window`` lies beyond the data, saying what would do."""
    wmin, wmax = float(window[0]), float(window[1])
    width = wmax - wmin
    blue, red = uncovered(wave, window)
    if blue + red <= max_uncovered * width:
        return
    span = f"data span {wave[0]:.6g}–{wave[-1]:.6g}"
    for scale, unit in ((10.0, "nm"), (1e4, "µm")):
        if uncovered(wave * scale, window) == (0.0, 0.0):
            raise RemapDataError(
                source, f"wavelengths: looks like {unit}, not Å ({span}); multiply by {scale:g} to convert to Å"
            )
    ends = " and ".join(f"{gap:.4g} Å at the {end} end" for gap, end in ((blue, "blue"), (red, "red")) if gap > 0)
    if blue + red >= width:
        ends = "all of it"
    problem = f"window {wmin:.6g}–{wmax:.6g} Å not covered ({span} Å): {ends} lies beyond the data"
    if max_uncovered > 0:
        problem += (
            f" ({100 * (blue + red) / width:.1f} % of the window; at most {100 * max_uncovered:g} %, "
            f"{max_uncovered * width:.4g} Å, is padded and masked). To fix: give a spectrum reaching within "
            f"{max_uncovered * width:.4g} Å of the window's ends in total, or use a model trained for the range "
            "your data cover (an instrument profile for `remap prepare --instrument`)"
        )
    raise RemapDataError(source, problem)


def _check_companions(wave, flux, ivar, mask, source) -> None:
    """Shapes of flux/ivar/mask against the wavelengths, and no negative ivar."""
    shape = np.shape(flux)
    if len(shape) not in (1, 2) or shape[-1] != wave.size:
        raise RemapDataError(
            source, f"shape mismatch: flux has shape {shape} but the wavelength array has {wave.size} pixels"
        )
    for name, arr in (("ivar", ivar), ("mask", mask)):
        if arr is not None and np.shape(arr) != shape:
            raise RemapDataError(source, f"shape mismatch: {name} has shape {np.shape(arr)}, flux has {shape}")
    if ivar is not None:
        nneg = np.count_nonzero(np.asarray(ivar) < 0)  # NaN ivar is masked later, not an error
        if nneg:
            raise RemapDataError(source, f"negative inverse variance in {nneg} pixel(s)")


def check_spectrum(wave, flux, ivar=None, source="<array>", window=None, mask=None,
                   max_uncovered: float = 0.0) -> Checked:
    """Validate a spectrum (or a batch on one grid) and return clean float64 arrays.

    Raises :class:`RemapDataError` naming ``source`` for: wavelengths that are not 1-D, not finite,
    duplicated or not increasing; wavelengths that do not cover ``window`` = (wmin, wmax) in Å —
    saying "looks like nm" (or µm) when 10× (1e4×) the values would cover it; flux/ivar/mask shapes
    that do not match the wavelengths; a spectrum whose flux is entirely NaN/inf; negative ivar.
    Up to ``max_uncovered`` (a share of the window's width) may lie beyond the data's ends.

    NaN/inf flux pixels, NaN ivar and ivar = 0 in an otherwise good spectrum are *not* errors:
    they come back masked (``mask`` True, ivar 0).
    """
    wave = _check_wave(wave, source, window, max_uncovered)
    _check_companions(wave, flux, ivar, mask, source)
    flux = np.array(flux, dtype=np.float64)  # a float64 copy: the caller's arrays are never modified
    bad = ~np.isfinite(flux)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if ivar is not None:
        ivar = np.array(ivar, dtype=np.float64)
        bad |= ~np.isfinite(ivar) | (ivar == 0)
        ivar[bad] = 0.0
    allbad = np.all(~np.isfinite(flux), axis=-1)
    if np.any(allbad):
        which = "" if flux.ndim == 1 else f" (spectrum {int(np.flatnonzero(allbad)[0])} of {flux.shape[0]})"
        raise RemapDataError(source, f"flux is all NaN/inf{which}")
    unusable = np.all(bad, axis=-1)
    if np.any(unusable):
        which = "" if flux.ndim == 1 else f" (spectrum {int(np.flatnonzero(unusable)[0])} of {flux.shape[0]})"
        raise RemapDataError(source, f"no usable pixels: every pixel is masked or has ivar=0{which}")
    return Checked(wave, flux, ivar, bad)

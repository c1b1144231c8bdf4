"""Spectrum preprocessing: air/vacuum, LSF degradation, resampling, continuum normalization.

Everything here is batched: flux arrays have shape ``(npix,)`` or ``(nspec, npix)`` on one shared
wavelength grid (Å), and no function loops over pixels in Python.

The workhorse is :class:`SpectralOperator`, one sparse matrix that maps input pixels to output
pixels. Its entries are the *exact* weights for

1. treating the input as piecewise constant on its pixels (edges at the midpoints between
   pixel centres, like ``spectres``),
2. convolving with a Gaussian line-spread function (LSF) whose σ may vary with wavelength, and
3. averaging the result over each output pixel (flux-conserving rebinning).

For input pixel ``i`` = [a, b] and output pixel ``j`` = [e0, e1] with kernel σ_j the weight is
``D_ij = G(e1-a) - G(e0-a) - G(e1-b) + G(e0-b)`` with ``G(x) = σ·F(x/σ)`` and
``F(t) = tΦ(t) + φ(t)`` (the second antiderivative of the Gaussian). When σ → 0, ``G(x) = max(x, 0)``
and ``D_ij`` is the overlap length of the two pixels, i.e. plain flux-conserving resampling. So one
code path serves "degrade + resample" and "resample only", and it stays exact however coarse the
input pixels are relative to the kernel. The matrix is built with vectorised numpy (ragged index
arithmetic, no per-pixel loops), cached per (input grid, output grid, kernel), and applied to a
whole batch as one sparse matmul.

:func:`to_instrument` is the one call used for every kind of spectrum (synthetic grid, PHOENIX,
observed MILES): check → air/vacuum → degrade + resample → continuum-normalize.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

from remap_lib.constants import FWHM_TO_SIGMA
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.instruments import get_instrument

AIR_VACUUM_MIN_WAVE = 2000.0  # Å (vacuum); by IAU convention shorter wavelengths are vacuum in both media
_SQRT_2PI = math.sqrt(2.0 * math.pi)

__all__ = [
    "Checked",
    "SpectralOperator",
    "Spectra",
    "air_to_vacuum",
    "build_operator",
    "check_spectrum",
    "continuum_normalize",
    "convert_medium",
    "degrade",
    "kernel_fwhm",
    "pixel_edges",
    "resample",
    "to_instrument",
    "uncovered",
    "vacuum_to_air",
]


# --------------------------------------------------------------------------------------------
# Air / vacuum
# --------------------------------------------------------------------------------------------
# Why ours, not specutils.utils.wcs_utils.{air_to_vac,vac_to_air}: the same Morton (2000) index and the
# same numbers (to 1e-11 Å with scheme="iteration"; its default "inversion" is 1e-4 Å off), but specutils
# is only an optional extra of the core package, wants Quantities, and raises below 2000 Å, where the IAU
# convention (kept here) is vacuum in both media. tests/spectra/test_preprocess.py checks the agreement.
def _refractive_index_vac(wave_vac: np.ndarray) -> np.ndarray:
    """n(λ_vac) of standard dry air, Morton (2000, ApJS 130, 403) eq. 8, from Birch & Downs (1994)."""
    s2 = (1e4 / wave_vac) ** 2  # (vacuum wavenumber in µm⁻¹)²
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)


def vacuum_to_air(wave) -> np.ndarray:
    """Vacuum → air wavelengths (Å).

    λ_air = λ_vac / n(λ_vac) with the refractive index of Morton (2000, ApJS 130, 403), the IAU
    standard also used by VALD3 (Birch & Downs 1994; dry air, 1 atm, 15 °C, 0.045 % CO₂):
    ``n = 1 + 8.34254e-5 + 2.406147e-2/(130 - s²) + 1.5998e-4/(38.9 - s²)``, ``s = 10⁴/λ_vac``.
    Wavelengths below 2000 Å are returned unchanged (IAU convention: vacuum there; the formula has
    a pole at 1603 Å). Hence the mapping is not monotonic within 0.65 Å of 2000 Å: convert only the
    window you need (as :func:`to_instrument` does), not a whole 500 Å – 5 µm grid.
    """
    wave = np.asarray(wave, dtype=np.float64)
    out = wave / _refractive_index_vac(np.maximum(wave, AIR_VACUUM_MIN_WAVE))
    return np.where(wave >= AIR_VACUUM_MIN_WAVE, out, wave)


_AIR_MIN_WAVE = float(vacuum_to_air(AIR_VACUUM_MIN_WAVE))  # 1999.352 Å: 2000 Å vacuum, in air


def air_to_vacuum(wave) -> np.ndarray:
    """Air → vacuum wavelengths (Å), the exact inverse of :func:`vacuum_to_air`.

    Solves λ_vac = λ_air · n(λ_vac) (Morton 2000 index, see :func:`vacuum_to_air`) by fixed-point
    iteration. Each step shrinks the error by λ·dn/dλ ≈ 1e-5, so four steps reach machine precision
    and ``vacuum_to_air(air_to_vacuum(x)) == x`` to ~1e-11 Å. (VALD's closed-form inverse by
    N. Piskunov agrees to 1e-8 Å.) Air wavelengths below 1999.352 Å (= 2000 Å vacuum) are returned
    unchanged, so both directions round-trip everywhere.
    """
    wave = np.asarray(wave, dtype=np.float64)
    air = np.maximum(wave, _AIR_MIN_WAVE)
    vac = air * _refractive_index_vac(np.maximum(air, AIR_VACUUM_MIN_WAVE))
    for _ in range(4):
        vac = air * _refractive_index_vac(vac)
    return np.where(wave >= _AIR_MIN_WAVE, vac, wave)


def convert_medium(wave, from_medium: str, to_medium: str) -> np.ndarray:
    """Convert wavelengths between ``"air"`` and ``"vacuum"`` (no-op when equal)."""
    for medium in (from_medium, to_medium):
        if medium not in ("air", "vacuum"):
            raise ValueError(f"medium must be 'air' or 'vacuum', got {medium!r}")
    if from_medium == to_medium:
        return np.asarray(wave, dtype=np.float64)
    return air_to_vacuum(wave) if from_medium == "air" else vacuum_to_air(wave)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# The sparse operator
# --------------------------------------------------------------------------------------------
def _second_antiderivative(x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """G(x) = σ·F(x/σ), F(t) = tΦ(t) + φ(t); G → max(x, 0) as σ → 0 (then it is evaluated exactly)."""
    pos = sigma > 0
    if pos.all():  # the usual degrade case: skip the masked copies
        t = x / sigma
        return sigma * (t * ndtr(t) + np.exp(-0.5 * t * t) / _SQRT_2PI)
    out = np.maximum(x, 0.0)
    if np.any(pos):
        s = sigma[pos]
        t = x[pos] / s
        out[pos] = s * (t * ndtr(t) + np.exp(-0.5 * t * t) / _SQRT_2PI)
    return out


def _digest(*arrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SpectralOperator:
    """Sparse map from input pixels to output pixels (Gaussian LSF + flux-conserving rebinning).

    ``matrix[j, i]`` is the (unnormalised) weight D_ij of input pixel ``in_start + i`` in output pixel
    ``j``; an output value is Σ_i D_ij f_i / Σ_i D_ij over the usable input pixels. ``width`` is the
    output pixel width, so ``Σ_i D_ij / width_j`` is the fraction of output pixel j (including its
    kernel) covered by usable data.
    """

    matrix: sp.csr_matrix  # (n_out, in_stop - in_start)
    matrix_sq: sp.csr_matrix  # element-wise square, for variance propagation
    rowsum: np.ndarray  # Σ_i D_ij over all input pixels
    width: np.ndarray  # output pixel widths (Å)
    wave_out: np.ndarray
    n_in: int  # length of the full input grid the operator was built for
    in_start: int
    in_stop: int

    def apply(self, flux, ivar=None, mask=None, min_coverage: float = 0.5):
        """Map a spectrum or batch on the input grid to the output grid.

        Unusable input pixels (``mask`` True, non-finite flux, ivar ≤ 0 or NaN) are left out and the
        weights renormalised. Returns ``(flux, ivar, mask)``: ``ivar`` from
        var_out = Σ D² var_in / (Σ D)² (None when no ivar was given); ``mask`` True where usable data
        cover less than ``min_coverage`` of the output pixel's weight (flux NaN, ivar 0 there).
        """
        flux = np.asarray(flux, dtype=np.float64)
        if flux.shape[-1] != self.n_in:
            raise ValueError(f"flux has {flux.shape[-1]} pixels, the operator was built for {self.n_in}")
        one = flux.ndim == 1
        sl = slice(self.in_start, self.in_stop)
        f = np.atleast_2d(flux)[:, sl]
        good = np.isfinite(f)
        if mask is not None:
            good &= ~np.atleast_2d(np.asarray(mask, dtype=bool))[:, sl]
        if ivar is not None:
            iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))[:, sl]
            good &= np.isfinite(iv) & (iv > 0)
        # CSR @ dense (n_in, nspec): one pass over the matrix for the whole batch.
        num = (self.matrix @ np.ascontiguousarray(np.where(good, f, 0.0).T)).T
        if good.all():
            den = np.broadcast_to(self.rowsum, num.shape)
        else:
            den = (self.matrix @ np.ascontiguousarray(good.T, dtype=np.float64)).T
        out_mask = den < min_coverage * self.width
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(out_mask, np.nan, num / den)
            ivar_out = None
            if ivar is not None:
                var = np.where(good, 1.0 / np.where(good, iv, 1.0), 0.0)
                var_out = (self.matrix_sq @ np.ascontiguousarray(var.T)).T / (den * den)
                ivar_out = np.where(out_mask | ~(var_out > 0), 0.0, 1.0 / var_out)
        if one:
            return out[0], (None if ivar_out is None else ivar_out[0]), out_mask[0]
        return out, ivar_out, out_mask


_OPERATORS: OrderedDict[tuple, SpectralOperator] = OrderedDict()
_OPERATOR_CACHE_SIZE = 16


def build_operator(wave_in, wave_out, kernel_fwhm=None, nsigma: float = 5.0) -> SpectralOperator:
    """The sparse operator from grid ``wave_in`` to grid ``wave_out`` (both Å, increasing).

    ``kernel_fwhm`` is the Gaussian kernel FWHM in Å at each output pixel (array or scalar); None or 0
    means plain flux-conserving resampling. The kernel is truncated at ``nsigma`` σ (rows are
    renormalised, so the truncation error is ~1e-6 of the line depth at 5σ). Only the input pixels
    the output needs are used (``in_start:in_stop``), so a 1.5M-pixel PHOENIX grid costs what its
    window costs. Operators are cached on the content of the grids and kernel.
    """
    wave_in = np.asarray(wave_in, dtype=np.float64)
    wave_out = np.asarray(wave_out, dtype=np.float64)
    nout = wave_out.size
    fwhm = np.zeros(nout) if kernel_fwhm is None else np.broadcast_to(np.asarray(kernel_fwhm, float), (nout,))
    sigma = np.ascontiguousarray(fwhm * FWHM_TO_SIGMA)
    e_out = pixel_edges(wave_out)
    reach = nsigma * sigma
    # Crop the input to what the output can see, then key the cache on the cropped grid.
    start = max(int(np.searchsorted(wave_in, e_out[0] - reach[0], "left")) - 2, 0)
    stop = min(int(np.searchsorted(wave_in, e_out[-1] + reach[-1], "right")) + 2, wave_in.size)
    key = (_digest(wave_in[start:stop], wave_out, sigma), wave_in.size, start, float(nsigma))
    if key in _OPERATORS:
        _OPERATORS.move_to_end(key)
        return _OPERATORS[key]

    e_in = pixel_edges(wave_in)[start : stop + 1]
    nin = stop - start
    # Input pixels overlapping [e_j - nσ_j, e_{j+1} + nσ_j]: pixels lo_j .. hi_j-1.
    lo = np.clip(np.searchsorted(e_in, e_out[:-1] - reach, "right") - 1, 0, nin)
    hi = np.clip(np.searchsorted(e_in, e_out[1:] + reach, "left"), 0, nin)
    hi = np.maximum(hi, lo)
    npx = hi - lo  # pixels per row
    nedge = np.where(npx > 0, npx + 1, 0)  # edges per row
    # Ragged layout without loops: row id and in-row position of every edge evaluation.
    row_e = np.repeat(np.arange(nout), nedge)
    first_e = np.cumsum(nedge) - nedge
    pos_e = np.arange(row_e.size) - first_e[row_e]
    edge = e_in[lo[row_e] + pos_e]
    s = sigma[row_e]
    # H_jk = ∫ over output pixel j of Φ((λ - E_k)/σ_j) dλ; D_ij = H_ji - H_j,i+1.
    h = _second_antiderivative(e_out[1:][row_e] - edge, s) - _second_antiderivative(e_out[:-1][row_e] - edge, s)
    keep = pos_e < nedge[row_e] - 1  # every edge except each row's last opens a pixel
    idx = np.flatnonzero(keep)
    data = h[idx] - h[idx + 1]
    cols = lo[row_e[idx]] + pos_e[idx]
    indptr = np.concatenate(([0], np.cumsum(npx)))
    data = np.maximum(data, 0.0)  # round-off far in the wings can give -1e-17
    matrix = sp.csr_matrix((data, cols, indptr), shape=(nout, nin))
    matrix_sq = sp.csr_matrix((data * data, cols, indptr), shape=(nout, nin))
    op = SpectralOperator(
        matrix=matrix,
        matrix_sq=matrix_sq,
        rowsum=np.asarray(matrix.sum(axis=1)).ravel(),
        width=np.diff(e_out),
        wave_out=wave_out,
        n_in=wave_in.size,
        in_start=start,
        in_stop=stop,
    )
    _OPERATORS[key] = op
    while len(_OPERATORS) > _OPERATOR_CACHE_SIZE:
        _OPERATORS.popitem(last=False)
    return op


# --------------------------------------------------------------------------------------------
# Resampling and degradation
# --------------------------------------------------------------------------------------------
def resample(wave_in, flux_in, wave_out, ivar=None, mask=None, min_coverage: float = 0.5):
    """Flux-conserving resampling (bin-integral averaging, as spectres) of one spectrum or a batch.

    Each output pixel is the average of the input (piecewise constant on its pixels) over the
    output pixel, so Σ f_out·Δλ_out = Σ f_in·Δλ_in on the common range. Masked / NaN / zero-ivar
    input pixels are excluded; with weights W, var_out = Σ W² var_in / (Σ W)². Returns
    ``(flux, ivar, mask)``; output pixels with less than ``min_coverage`` of their width covered by
    usable input are masked (flux NaN, ivar 0). ``ivar`` is None when none was given.
    """
    wave_in = _check_wave(wave_in, "resample input")
    wave_out = _check_wave(wave_out, "resample output grid")
    op = build_operator(wave_in, wave_out, None)
    return op.apply(flux_in, ivar=ivar, mask=mask, min_coverage=min_coverage)


def pixel_fwhm2(wave) -> np.ndarray:
    """The FWHM² (Å²) a Gaussian gains when averaged over the pixels centred on ``wave``: a box of width
    Δλ has variance Δλ²/12, and FWHM² = 8 ln 2 · variance."""
    width = np.diff(pixel_edges(np.asarray(wave, dtype=np.float64)))
    return width**2 / 12.0 / FWHM_TO_SIGMA**2


def kernel_fwhm(wave, instrument, source_resolution=None, source_fwhm=None, source="<array>",
                pixel_in_lsf: bool = False) -> np.ndarray:
    """FWHM (Å) of the Gaussian that takes the source LSF to the instrument's, at each ``wave``.

    Widths add in quadrature: FWHM_kernel² = FWHM_target² − FWHM_source², where the source is a
    constant resolving power ``source_resolution``, a constant ``source_fwhm`` (Å) or, when both are
    None, infinitely sharp (native synthetic spectra). Raises RemapDataError (naming ``source``) if
    the source is coarser than the target anywhere: we cannot sharpen. Equal LSFs give 0.
    ``pixel_in_lsf``: the instrument's FWHM is the width its lines have on its own pixels (as measured
    on a spectrograph's output), so the output pixel's share (:func:`pixel_fwhm2`, at the pixels
    ``wave``) is taken off the target as well, and a degraded line ends up that wide, pixel included.
    """
    instrument = get_instrument(instrument)
    wave = np.asarray(wave, dtype=np.float64)
    if source_resolution is not None and source_fwhm is not None:
        raise ValueError("give source_resolution or source_fwhm, not both")
    target = instrument.lsf_fwhm(wave)
    what = f"the {instrument.name} LSF FWHM"
    if pixel_in_lsf:
        left = target**2 - pixel_fwhm2(wave)
        if np.any(left <= 0):
            raise ValueError(f"{instrument.name}: its pixels are too wide for its LSF to hold them (pixel_in_lsf)")
        target, what = np.sqrt(left), f"the {instrument.name} LSF FWHM less its pixel"
    if source_resolution is not None:
        src = wave / float(source_resolution)
    elif source_fwhm is not None:
        src = np.full_like(wave, float(source_fwhm))
    else:
        src = np.zeros_like(wave)
    diff = target**2 - src**2
    worst = int(np.argmin(diff / target**2))
    if diff[worst] < -1e-9 * target[worst] ** 2:  # tolerance: "equal" LSFs given two ways
        raise RemapDataError(
            source,
            f"cannot sharpen: source LSF FWHM {src[worst]:.4g} Å is wider than {what} "
            f"{target[worst]:.4g} Å at {wave[worst]:.6g} Å",
        )
    return np.sqrt(np.maximum(diff, 0.0))


def degrade(
    wave,
    flux,
    instrument,
    ivar=None,
    mask=None,
    source_resolution=None,
    source_fwhm=None,
    nsigma: float = 5.0,
    min_coverage: float = 0.5,
    source="<array>",
    pixel_in_lsf: bool = False,
):
    """Degrade to the instrument LSF and resample onto its grid, in one sparse matmul.

    ``wave`` must already be in the instrument's medium (see :func:`to_instrument`). The output is
    the input convolved with the quadrature-difference kernel (:func:`kernel_fwhm`) and averaged over
    each output pixel, so a line's measured width also contains the output pixel (variance Δλ²/12,
    ~2.5 % in FWHM at 3 pixels per resolution element) unless ``pixel_in_lsf`` (:func:`kernel_fwhm`).
    Returns ``(flux, ivar, mask)`` as :meth:`SpectralOperator.apply`.
    """
    instrument = get_instrument(instrument)
    grid = instrument.wavelength_grid()
    kern = kernel_fwhm(grid, instrument, source_resolution, source_fwhm, source, pixel_in_lsf)
    op = build_operator(wave, grid, kern, nsigma)
    return op.apply(flux, ivar=ivar, mask=mask, min_coverage=min_coverage)


# --------------------------------------------------------------------------------------------
# Continuum normalization
# --------------------------------------------------------------------------------------------
def continuum_normalize(
    wave,
    flux,
    ivar=None,
    mask=None,
    degree: int = 3,
    low: float = 1.5,
    high: float = 3.0,
    max_iter: int = 20,
    min_keep: float = 0.05,
):
    """Divide by a pseudo-continuum: iterative asymmetric sigma-clipped Legendre fit, batched.

    The same function is used for synthetic and observed spectra so both see the same definition
    of "continuum". Per spectrum, a Legendre polynomial of ``degree`` in λ (mapped to [-1, 1]) is
    fitted by weighted least squares (weights = ivar, or 1 when ``ivar`` is None), then pixels with
    residual below ``-low``·σ (absorption lines) or above ``high``·σ (cosmics, emission) are dropped
    and the fit repeated, up to ``max_iter`` times or until no pixel changes. σ is the weighted rms
    residual of the kept pixels (residuals scaled by √(ivar/mean ivar)); clipping is asymmetric
    because lines only ever pull the flux down. A spectrum stops early rather than keep fewer than
    ``min_keep`` of its usable pixels. All spectra are solved at once from batched normal equations.

    Returns ``(norm_flux, norm_ivar, continuum)``; ``norm_ivar = ivar·continuum²`` (None when
    ``ivar`` is None). Masked pixels (``mask`` True, NaN flux, ivar 0) are ignored by the fit and
    keep their (NaN or masked) values.
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    one = flux.ndim == 1
    f = np.atleast_2d(flux)
    good = np.isfinite(f)
    if mask is not None:
        good &= ~np.atleast_2d(np.asarray(mask, dtype=bool))
    if ivar is not None:
        iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        good &= np.isfinite(iv) & (iv > 0)
        w = np.where(good, iv, 0.0)
    else:
        w = good.astype(np.float64)
    # Relative weights (mean 1 over usable pixels) keep numbers O(1) whatever the flux units.
    ngood = np.maximum(good.sum(axis=1, keepdims=True), 1)
    w = w / np.maximum(w.sum(axis=1, keepdims=True) / ngood, np.finfo(float).tiny)
    fz = np.where(good, f, 0.0)
    x = 2.0 * (wave - wave[0]) / (wave[-1] - wave[0]) - 1.0
    V = np.polynomial.legendre.legvander(x, degree)  # (npix, k)
    k = degree + 1
    scale = np.sqrt(w)
    # Residuals below ~1e-6 of the flux level count as zero (noise-free synthetic spectra).
    floor = 1e-6 * np.nanmedian(np.where(good, np.abs(fz), np.nan), axis=1, keepdims=True)
    floor = np.nan_to_num(floor, nan=0.0) + np.finfo(float).tiny

    # Plain C einsum loops, not BLAS: the products are tiny (nspec·npix·k²), and multithreaded BLAS on
    # them can stall for seconds when torch's OpenMP pool shares the cores.
    VV = (V[:, :, None] * V[:, None, :]).reshape(V.shape[0], k * k)  # outer products per pixel

    def fit(sel):
        ws = w * sel
        A = np.einsum("sp,pq->sq", ws, VV, optimize=False).reshape(-1, k, k)
        b = np.einsum("sp,pk->sk", ws * fz, V, optimize=False)
        ridge = 1e-12 * np.trace(A, axis1=1, axis2=2)[:, None, None] * np.eye(k) + 1e-300 * np.eye(k)
        coef = np.linalg.solve(A + ridge, b[..., None])[..., 0]
        return np.einsum("sk,pk->sp", coef, V, optimize=False)

    keep = good.copy()
    done = np.zeros(f.shape[0], dtype=bool)
    min_n = np.maximum(np.ceil(min_keep * good.sum(axis=1)), k + 1)
    cont = fit(keep)
    for _ in range(max_iter):
        r = (fz - cont) * scale
        nkeep = np.maximum(keep.sum(axis=1, keepdims=True), 1)
        sig = np.sqrt((keep * r * r).sum(axis=1, keepdims=True) / nkeep)
        sig = np.maximum(sig, floor)
        new = good & (r > -low * sig) & (r < high * sig)
        # Freeze spectra that converged or would drop below min_keep pixels.
        stop = np.all(new == keep, axis=1) | (new.sum(axis=1) < min_n)
        done |= stop
        if done.all():
            break
        keep = np.where(done[:, None], keep, new)
        cont = np.where(done[:, None], cont, fit(keep))
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = f / cont
        norm_ivar = None
        if ivar is not None:
            norm_ivar = np.where(good & (cont > 0), iv * cont * cont, 0.0)
    if one:
        return norm[0], (None if norm_ivar is None else norm_ivar[0]), cont[0]
    return norm, norm_ivar, cont


# --------------------------------------------------------------------------------------------
# One call for every spectrum
# --------------------------------------------------------------------------------------------
class Spectra(NamedTuple):
    """Spectra on an instrument grid, continuum-normalized.

    ``flux`` is flux / continuum, with masked pixels set to 1.0 (the continuum) so arrays can go
    straight into a network; ``mask`` (True = unusable) and ``ivar`` (0 there) say which they are.
    ``ivar`` is None when no ivar was given (noise-free synthetic spectra). ``continuum`` is in the
    input flux units.
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray | None
    mask: np.ndarray
    continuum: np.ndarray


def to_instrument(
    wave,
    flux,
    instrument,
    ivar=None,
    mask=None,
    *,
    medium: str,
    source_resolution=None,
    source_fwhm=None,
    source="<array>",
    normalize: bool = True,
    continuum: dict | None = None,
    nsigma: float = 5.0,
    min_coverage: float = 0.5,
    max_uncovered: float = 0.0,
    pixel_in_lsf: bool = False,
) -> Spectra:
    """Put spectra on ``instrument``'s grid: the one pipeline for synthetic and observed spectra.

    1. validate (:func:`check_spectrum`; errors name ``source``) against the instrument window, of
       which up to ``max_uncovered`` (a share of its width; default none) may lie beyond the data's
       ends: those output pixels come back masked, like pixels under NaN flux;
    2. crop to the window plus the kernel reach, convert air ↔ vacuum if ``medium`` (the input's)
       differs from the instrument's;
    3. degrade from the source LSF (``source_resolution`` R, ``source_fwhm`` Å, or None = native) to
       the instrument LSF and resample flux-conservingly — one cached sparse matmul for the batch;
       an input already at the instrument's LSF (observed MILES → MILES) is only resampled; with
       ``pixel_in_lsf`` the output pixel's width is counted in the instrument's FWHM (:func:`kernel_fwhm`);
    4. continuum-normalize with :func:`continuum_normalize` (keyword overrides in ``continuum``)
       unless ``normalize`` is False (then ``continuum`` is ones).

    ``flux`` is ``(npix,)`` or ``(nspec, npix)``; outputs have the same leading shape.
    """
    instrument = get_instrument(instrument)
    grid = instrument.wavelength_grid()
    edges = pixel_edges(grid)
    kern = kernel_fwhm(grid, instrument, source_resolution, source_fwhm, source, pixel_in_lsf)
    # The window, in the input's medium, that the input must cover.
    window = convert_medium(edges[[0, -1]], instrument.medium, medium)
    wave = _check_wave(wave, source, window, max_uncovered)
    _check_companions(wave, flux, ivar, mask, source)  # on the full arrays: corrupt data anywhere is an error
    reach = nsigma * FWHM_TO_SIGMA * float(kern.max()) + 2.0  # + 2 Å: slack for the medium shift
    start = max(int(np.searchsorted(wave, window[0] - reach)) - 2, 0)
    stop = min(int(np.searchsorted(wave, window[1] + reach, "right")) + 2, wave.size)
    flux = np.asarray(flux)
    crop = (..., slice(start, stop))
    checked = check_spectrum(
        wave[start:stop],
        flux[crop],
        None if ivar is None else np.asarray(ivar)[crop],
        source=source,
        window=window,
        mask=None if mask is None else np.asarray(mask)[crop],
        max_uncovered=max_uncovered,
    )
    wave_c = convert_medium(checked.wave, medium, instrument.medium)
    op = build_operator(wave_c, grid, kern, nsigma)
    f, iv, m = op.apply(checked.flux, ivar=checked.ivar, mask=checked.mask, min_coverage=min_coverage)
    if normalize:
        kw = dict(continuum or {})
        f, iv, cont = continuum_normalize(grid, f, iv, m, **kw)
        m = m | ~np.isfinite(f) | ~(cont > 0)
    else:
        cont = np.ones_like(f)
    f = np.where(m, 1.0 if normalize else np.nan, f)
    if iv is not None:
        iv = np.where(m, 0.0, iv)
    return Spectra(grid, f, iv, m, cont)
